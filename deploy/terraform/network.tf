# How tenants, agents and federated peers reach the processes: HTTP for web, raw TCP for the
# agent API and the https_spiffe bundle endpoint.

resource "kubernetes_service_v1" "web" {
  metadata {
    name      = "${var.name}-web"
    namespace = local.namespace
    labels    = merge(local.labels, { "app.kubernetes.io/component" = "web" })
  }

  wait_for_load_balancer = var.wait_for_load_balancer

  spec {
    type     = var.web_service_type
    selector = merge(local.selector, { "app.kubernetes.io/component" = "web" })

    port {
      name        = "http"
      port        = local.web_port
      target_port = "http"
      protocol    = "TCP"
    }
  }
}

# The agent API terminates TLS itself, choosing the tenant's server certificate by SNI and
# checking the agent's SVID, so the load balancer must pass TCP through untouched: no
# certificate, no HTTP/gRPC awareness, no PROXY protocol (variables.tf refuses annotations
# that would add any of these).
resource "kubernetes_service_v1" "agent_api" {
  metadata {
    name        = "${var.name}-agent-api"
    namespace   = local.namespace
    labels      = merge(local.labels, { "app.kubernetes.io/component" = "agent-api" })
    annotations = var.agent_api_service_annotations
  }

  wait_for_load_balancer = var.wait_for_load_balancer

  spec {
    type                        = var.agent_api_service_type
    selector                    = merge(local.selector, { "app.kubernetes.io/component" = "agent-api" })
    external_traffic_policy     = var.agent_api_service_type == "ClusterIP" ? null : var.agent_api_external_traffic_policy
    load_balancer_source_ranges = var.agent_api_service_type == "LoadBalancer" ? var.agent_api_load_balancer_source_ranges : null

    port {
      name        = "tcp-agent-api"
      port        = var.agent_api_service_port
      target_port = "tcp-agent-api"
      protocol    = "TCP"
    }
  }
}

# The https_spiffe bundle endpoint terminates TLS itself too, presenting the tenant's
# spiffe://<td>/spire/server SVID chosen by SNI; peers authenticate that SVID, so nothing in
# front may hold a certificate or speak HTTP: TCP passthrough only, as for the agent API.
resource "kubernetes_service_v1" "bundle_endpoint" {
  metadata {
    name        = "${var.name}-bundle-endpoint"
    namespace   = local.namespace
    labels      = merge(local.labels, { "app.kubernetes.io/component" = "bundle-endpoint" })
    annotations = var.bundle_endpoint_service_annotations
  }

  wait_for_load_balancer = var.wait_for_load_balancer

  spec {
    type                        = var.bundle_endpoint_service_type
    selector                    = merge(local.selector, { "app.kubernetes.io/component" = "bundle-endpoint" })
    external_traffic_policy     = var.bundle_endpoint_service_type == "ClusterIP" ? null : var.bundle_endpoint_external_traffic_policy
    load_balancer_source_ranges = var.bundle_endpoint_service_type == "LoadBalancer" ? var.bundle_endpoint_load_balancer_source_ranges : null

    port {
      name        = "tcp-bundle"
      port        = var.bundle_endpoint_service_port
      target_port = "tcp-bundle"
      protocol    = "TCP"
    }
  }
}

resource "kubernetes_ingress_v1" "web" {
  count = var.ingress_enabled ? 1 : 0

  metadata {
    name        = "${var.name}-web"
    namespace   = local.namespace
    labels      = merge(local.labels, { "app.kubernetes.io/component" = "web" })
    annotations = var.ingress_annotations
  }

  spec {
    ingress_class_name = var.ingress_class_name

    dynamic "tls" {
      for_each = var.ingress_tls_secret_name == null ? [] : [var.ingress_tls_secret_name]
      content {
        hosts       = [var.ingress_host]
        secret_name = tls.value
      }
    }

    rule {
      host = var.ingress_host
      http {
        path {
          path      = "/"
          path_type = "Prefix"
          backend {
            service {
              name = kubernetes_service_v1.web.metadata[0].name
              port {
                name = "http"
              }
            }
          }
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.ingress_host != null
      error_message = "ingress_enabled needs ingress_host."
    }
  }
}
