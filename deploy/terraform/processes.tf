# One Deployment per process kind (web, agent-api, bundle-endpoint, worker, beat), after
# migrations ran.

resource "kubernetes_deployment_v1" "process" {
  for_each = local.processes

  metadata {
    name      = "${var.name}-${each.key}"
    namespace = local.namespace
    labels    = merge(local.labels, { "app.kubernetes.io/component" = each.key })
  }

  # New code meets a migrated schema: the Job for this image and settings finished first.
  depends_on = [kubernetes_job_v1.migrate]

  wait_for_rollout = true

  spec {
    replicas                  = each.value.replicas
    revision_history_limit    = 5
    progress_deadline_seconds = 600

    selector {
      match_labels = merge(local.selector, { "app.kubernetes.io/component" = each.key })
    }

    strategy {
      type = each.value.strategy

      dynamic "rolling_update" {
        for_each = each.value.strategy == "RollingUpdate" ? [1] : []
        content {
          max_surge       = "25%"
          max_unavailable = "0"
        }
      }
    }

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/component" = each.key })
        annotations = merge(
          var.pod_annotations,
          { "checksum/settings" = local.settings_checksum },
          # For a Prometheus that discovers pods by annotation (no operator).
          each.value.serves_metrics ? {
            "prometheus.io/scrape" = "true"
            "prometheus.io/port"   = tostring(var.metrics_port)
            "prometheus.io/path"   = "/metrics"
          } : {},
        )
      }

      spec {
        service_account_name             = var.service_account_name
        automount_service_account_token  = var.automount_service_account_token
        termination_grace_period_seconds = var.termination_grace_period_seconds
        node_selector                    = var.node_selector

        dynamic "image_pull_secrets" {
          for_each = var.image_pull_secrets
          content {
            name = image_pull_secrets.value
          }
        }

        dynamic "toleration" {
          for_each = var.tolerations
          content {
            key                = toleration.value.key
            operator           = toleration.value.operator
            value              = toleration.value.value
            effect             = toleration.value.effect
            toleration_seconds = toleration.value.toleration_seconds
          }
        }

        # Replicas on different nodes where possible, so one node loss is not an outage.
        dynamic "topology_spread_constraint" {
          for_each = each.value.spread_over_nodes ? [1] : []
          content {
            max_skew           = 1
            topology_key       = "kubernetes.io/hostname"
            when_unsatisfiable = "ScheduleAnyway"
            label_selector {
              match_labels = merge(local.selector, { "app.kubernetes.io/component" = each.key })
            }
          }
        }

        security_context {
          run_as_non_root = true
          run_as_user     = var.run_as_user
          run_as_group    = var.run_as_user
          fs_group        = var.run_as_user
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = each.key
          image             = var.image
          image_pull_policy = var.image_pull_policy
          command           = each.value.command

          dynamic "port" {
            for_each = each.value.port == null ? [] : [each.value.port]
            content {
              name           = port.value.name
              container_port = port.value.number
              protocol       = "TCP"
            }
          }

          dynamic "port" {
            for_each = each.value.serves_metrics ? [var.metrics_port] : []
            content {
              name           = "metrics"
              container_port = port.value
              protocol       = "TCP"
            }
          }

          env_from {
            config_map_ref {
              name = kubernetes_config_map_v1.settings.metadata[0].name
            }
          }
          env_from {
            secret_ref {
              name = kubernetes_secret_v1.settings.metadata[0].name
            }
          }

          dynamic "env" {
            for_each = local.metrics_env[each.key]
            content {
              name  = env.key
              value = env.value
            }
          }

          dynamic "env" {
            for_each = var.extra_env
            content {
              name  = env.key
              value = env.value
            }
          }

          resources {
            requests = each.value.resources.requests
            limits   = each.value.resources.limits
          }

          # Ready = /readyz answers 200 (this pod's database and Redis), or the agent API or
          # bundle endpoint accepts connections (each listens once its tenants' credentials
          # are loaded). Not /healthz: it needs worker, agent-API and bundle-endpoint
          # heartbeats, and would take every web pod out of service while one is replaced.
          dynamic "readiness_probe" {
            for_each = each.value.port == null ? [] : [each.value]
            content {
              dynamic "http_get" {
                for_each = readiness_probe.value.readiness_path == null ? [] : [1]
                content {
                  path = readiness_probe.value.readiness_path
                  port = readiness_probe.value.port.name
                  dynamic "http_header" {
                    for_each = local.probe_host == null ? [] : [local.probe_host]
                    content {
                      name  = "Host"
                      value = http_header.value
                    }
                  }
                }
              }
              dynamic "tcp_socket" {
                for_each = readiness_probe.value.readiness_path == null ? [1] : []
                content {
                  port = readiness_probe.value.port.name
                }
              }
              initial_delay_seconds = 5
              period_seconds        = 10
              timeout_seconds       = 5
              failure_threshold     = 3
            }
          }

          # Alive = the listener accepts connections. Not /healthz: a database or Redis
          # outage would then restart every pod, which cannot fix either and slows recovery.
          dynamic "liveness_probe" {
            for_each = each.value.port == null ? [] : [each.value.port]
            content {
              tcp_socket {
                port = liveness_probe.value.name
              }
              initial_delay_seconds = 20
              period_seconds        = 20
              timeout_seconds       = 5
              failure_threshold     = 3
            }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "data"
            mount_path = local.data_dir
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
          dynamic "volume_mount" {
            for_each = var.pkcs11_volume == null ? [] : [var.pkcs11_volume]
            content {
              name       = "pkcs11"
              mount_path = volume_mount.value.mount_path
              read_only  = volume_mount.value.read_only
            }
          }
          dynamic "volume_mount" {
            for_each = local.has_secret_files ? [1] : []
            content {
              name       = "files"
              mount_path = local.files_dir
              read_only  = true
            }
          }
        }

        volume {
          name = "data"
          empty_dir {}
        }
        volume {
          name = "tmp"
          empty_dir {}
        }
        dynamic "volume" {
          for_each = var.pkcs11_volume == null ? [] : [var.pkcs11_volume]
          content {
            name = "pkcs11"
            dynamic "host_path" {
              for_each = volume.value.host_path == null ? [] : [volume.value.host_path]
              content {
                path = host_path.value
                type = "Directory"
              }
            }
            dynamic "persistent_volume_claim" {
              for_each = volume.value.persistent_volume_claim == null ? [] : [volume.value.persistent_volume_claim]
              content {
                claim_name = persistent_volume_claim.value
                read_only  = volume.value.read_only
              }
            }
          }
        }
        dynamic "volume" {
          for_each = local.has_secret_files ? [1] : []
          content {
            name = "files"
            secret {
              secret_name  = kubernetes_secret_v1.files[0].metadata[0].name
              default_mode = "0440"
            }
          }
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = each.key != "beat" || (each.value.replicas == 1 && each.value.strategy == "Recreate")
      error_message = "Celery beat must run as exactly one replica with the Recreate strategy."
    }
  }
}

# Voluntary disruptions (node drains, upgrades) take one serving pod at a time.
resource "kubernetes_pod_disruption_budget_v1" "process" {
  for_each = { for kind, process in local.processes : kind => process if process.disruption_budgeted }

  metadata {
    name      = "${var.name}-${each.key}"
    namespace = local.namespace
    labels    = merge(local.labels, { "app.kubernetes.io/component" = each.key })
  }

  spec {
    max_unavailable = "1"
    selector {
      match_labels = merge(local.selector, { "app.kubernetes.io/component" = each.key })
    }
  }
}
