locals {
  labels = {
    "app.kubernetes.io/name"      = "hallmark-agent"
    "app.kubernetes.io/instance"  = var.name
    "app.kubernetes.io/component" = "agent"
  }
  socket_mount = "/run/hallmark-agent/sockets"
  agent_toml = templatefile("${path.module}/agent.toml.tftpl", {
    server                    = var.server
    trust_domain              = var.trust_domain
    trust_bundle_url          = var.trust_bundle_url
    cluster                   = var.cluster
    skip_kubelet_verification = var.skip_kubelet_verification
    unix_workload_attestor    = var.unix_workload_attestor
  })
  namespace = var.create_namespace ? kubernetes_namespace_v1.agent[0].metadata[0].name : var.namespace
}

resource "kubernetes_namespace_v1" "agent" {
  count = var.create_namespace ? 1 : 0
  metadata {
    name   = var.namespace
    labels = local.labels
  }
}

resource "kubernetes_service_account_v1" "agent" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
}

# The kubelet authorizes GET /pods on its secure port as the nodes/proxy subresource.
resource "kubernetes_cluster_role_v1" "agent" {
  metadata {
    name   = var.name
    labels = local.labels
  }
  rule {
    api_groups = [""]
    resources  = ["pods", "nodes", "nodes/proxy"]
    verbs      = ["get"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "agent" {
  metadata {
    name   = var.name
    labels = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.agent.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.agent.metadata[0].name
    namespace = local.namespace
  }
}

resource "kubernetes_config_map_v1" "agent" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  data = {
    "agent.toml" = local.agent_toml
  }
}

resource "kubernetes_daemon_set_v1" "agent" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  spec {
    selector {
      match_labels = local.labels
    }
    strategy {
      type = "RollingUpdate"
      rolling_update {
        max_unavailable = "1"
      }
    }
    template {
      metadata {
        labels = local.labels
        annotations = {
          "checksum/config" = sha256(local.agent_toml)
        }
      }
      spec {
        service_account_name            = kubernetes_service_account_v1.agent.metadata[0].name
        automount_service_account_token = true # the kubelet credential of the k8s attestor
        # hostPID: SO_PEERCRED names workloads by their host pid, and /proc/<pid>/cgroup
        # must be theirs. hostNetwork: the kubelet is reached on the node itself.
        host_pid     = true
        host_network = true
        dns_policy   = "ClusterFirstWithHostNet"

        dynamic "toleration" {
          for_each = var.tolerations
          content {
            key      = toleration.value.key
            operator = toleration.value.operator
            value    = toleration.value.value
            effect   = toleration.value.effect
          }
        }

        container {
          name    = "agent"
          image   = var.image
          args    = ["run", "--config", "/etc/hallmark-agent/agent.toml"]
          command = ["hallmark-agent"]

          env {
            name = "MY_NODE_NAME"
            value_from {
              field_ref {
                field_path = "spec.nodeName"
              }
            }
          }

          resources {
            requests = var.resources.requests
            limits   = var.resources.limits
          }

          # Root: reading other users' /proc/<pid>/exe (unix:path, unix:sha256) needs it.
          security_context {
            run_as_user                = 0
            read_only_root_filesystem  = true
            allow_privilege_escalation = false
            privileged                 = false
          }

          liveness_probe {
            exec {
              command = ["hallmark-agent", "healthcheck", "--socket", "${local.socket_mount}/agent.sock"]
            }
            initial_delay_seconds = 15
            period_seconds        = 30
            timeout_seconds       = 5
          }

          volume_mount {
            name       = "config"
            mount_path = "/etc/hallmark-agent"
            read_only  = true
          }
          volume_mount {
            name       = "psat"
            mount_path = "/var/run/secrets/tokens"
            read_only  = true
          }
          volume_mount {
            name       = "sockets"
            mount_path = local.socket_mount
          }
          volume_mount {
            name       = "data"
            mount_path = "/var/lib/hallmark-agent"
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "config"
          config_map {
            name = kubernetes_config_map_v1.agent.metadata[0].name
          }
        }
        # The projected token k8s_psat attests with: its own audience, short-lived, bound
        # to this pod (the control plane checks pod and node through it).
        volume {
          name = "psat"
          projected {
            sources {
              service_account_token {
                path               = "hallmark-agent"
                audience           = var.token_audience
                expiration_seconds = var.token_expiration_seconds
              }
            }
          }
        }
        volume {
          name = "sockets"
          host_path {
            path = var.socket_host_dir
            type = "DirectoryOrCreate"
          }
        }
        # k8s_psat agents re-attest after a restart: the agent's key need not outlive the pod.
        volume {
          name = "data"
          empty_dir {}
        }
        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }
}
