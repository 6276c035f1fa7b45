# `hallmark migrate` (public and every tenant schema) once per image and settings, before
# the Deployments roll. The name carries the release hash, so a new image makes a new Job
# and apply waits for it; a failed migration stops the apply with the old pods serving.

resource "kubernetes_job_v1" "migrate" {
  metadata {
    name      = "${var.name}-migrate-${local.release}"
    namespace = local.namespace
    labels    = merge(local.labels, { "app.kubernetes.io/component" = "migrate" })
  }

  wait_for_completion = true

  timeouts {
    create = var.migration_timeout
    update = var.migration_timeout
  }

  spec {
    backoff_limit = 3

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/component" = "migrate" })
        annotations = merge(var.pod_annotations, var.migration_pod_annotations, {
          "checksum/settings" = local.settings_checksum
        })
      }

      spec {
        restart_policy                   = "Never"
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
          name              = "migrate"
          image             = var.image
          image_pull_policy = var.image_pull_policy
          command           = local.migrate_command

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
            for_each = var.extra_env
            content {
              name  = env.key
              value = env.value
            }
          }

          resources {
            requests = var.resources.migrate.requests
            limits   = var.resources.migrate.limits
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
}
