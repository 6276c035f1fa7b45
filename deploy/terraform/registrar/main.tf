locals {
  labels = {
    "app.kubernetes.io/name"      = "hallmark-registrar"
    "app.kubernetes.io/instance"  = var.name
    "app.kubernetes.io/component" = "registrar"
  }
  token_mount = "/var/run/secrets/hallmark"
}

# The ClusterSPIFFEID resource (hallmark.dev/v1alpha1), from the manifest beside this file.
resource "kubernetes_manifest" "clusterspiffeid_crd" {
  count    = var.install_crd ? 1 : 0
  manifest = yamldecode(file("${path.module}/crds/clusterspiffeids.hallmark.dev.yaml"))
}

resource "kubernetes_service_account_v1" "registrar" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }
}

# Read-only: the registrar lists and watches; it writes nothing to the cluster.
resource "kubernetes_cluster_role_v1" "registrar" {
  metadata {
    name   = var.name
    labels = local.labels
  }
  rule {
    api_groups = [""]
    resources  = ["pods", "namespaces"]
    verbs      = ["get", "list", "watch"]
  }
  rule {
    api_groups = ["hallmark.dev"]
    resources  = ["clusterspiffeids"]
    verbs      = ["get", "list", "watch"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "registrar" {
  metadata {
    name   = var.name
    labels = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.registrar.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.registrar.metadata[0].name
    namespace = var.namespace
  }
}

resource "kubernetes_secret_v1" "registrar" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }
  data = {
    token = var.api_token
  }
}

resource "kubernetes_deployment_v1" "registrar" {
  metadata {
    name      = var.name
    namespace = var.namespace
    labels    = local.labels
  }
  spec {
    # One writer: two replicas would both reconcile (harmlessly, but twice the calls).
    replicas = 1
    strategy {
      type = "Recreate"
    }
    selector {
      match_labels = local.labels
    }
    template {
      metadata {
        labels = local.labels
      }
      spec {
        service_account_name            = kubernetes_service_account_v1.registrar.metadata[0].name
        automount_service_account_token = true # its Kubernetes API credential (in-cluster)

        container {
          name    = "registrar"
          image   = var.image
          command = ["hallmark-registrar"]
          args = [
            "--server", var.server_url,
            "--token-file", "${local.token_mount}/token",
            "--cluster-name", var.cluster,
            "--cluster-domain", var.cluster_domain,
            "--parent-id-template", var.parent_id_template,
            "--resync", tostring(var.resync_seconds),
          ]

          resources {
            requests = var.resources.requests
            limits   = var.resources.limits
          }

          security_context {
            run_as_non_root            = true
            run_as_user                = 10001 # the image's user (deploy/Dockerfile)
            read_only_root_filesystem  = true
            allow_privilege_escalation = false
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "token"
            mount_path = local.token_mount
            read_only  = true
          }
        }

        volume {
          name = "token"
          secret {
            secret_name  = kubernetes_secret_v1.registrar.metadata[0].name
            default_mode = "0400"
          }
        }
      }
    }
  }
}
