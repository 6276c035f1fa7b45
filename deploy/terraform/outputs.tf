output "namespace" {
  description = "Namespace holding every Hallmark object."
  value       = local.namespace
}

output "web_service" {
  description = "The web Service (REST API, https_web bundle endpoint, /healthz) as name.namespace:port."
  value       = "${kubernetes_service_v1.web.metadata[0].name}.${local.namespace}:${local.web_port}"
}

output "agent_api_service" {
  description = "The agent-API Service as name.namespace:port."
  value       = "${kubernetes_service_v1.agent_api.metadata[0].name}.${local.namespace}:${var.agent_api_service_port}"
}

output "agent_api_load_balancer" {
  description = "Address (IP or host name) of the agent-API load balancer, to point agent_endpoint's DNS name at; null until one is assigned or without a LoadBalancer Service."
  value = try(
    coalesce(
      kubernetes_service_v1.agent_api.status[0].load_balancer[0].ingress[0].hostname,
      kubernetes_service_v1.agent_api.status[0].load_balancer[0].ingress[0].ip,
    ),
    null,
  )
}

output "bundle_endpoint_service" {
  description = "The https_spiffe bundle-endpoint Service as name.namespace:port."
  value       = "${kubernetes_service_v1.bundle_endpoint.metadata[0].name}.${local.namespace}:${var.bundle_endpoint_service_port}"
}

output "bundle_endpoint_load_balancer" {
  description = "Address (IP or host name) of the https_spiffe bundle-endpoint load balancer, for the DNS name in the bundle endpoint URL peers configure (https://NAME:bundle_endpoint_service_port/); null until one is assigned or without a LoadBalancer Service."
  value = try(
    coalesce(
      kubernetes_service_v1.bundle_endpoint.status[0].load_balancer[0].ingress[0].hostname,
      kubernetes_service_v1.bundle_endpoint.status[0].load_balancer[0].ingress[0].ip,
    ),
    null,
  )
}

output "deployments" {
  description = "Deployment name of each process kind (web, agent-api, bundle-endpoint, worker, beat)."
  value       = { for kind, deployment in kubernetes_deployment_v1.process : kind => deployment.metadata[0].name }
}

output "migration_job" {
  description = "Name of the migration Job of the current release (its logs: kubectl logs job/NAME)."
  value       = kubernetes_job_v1.migrate.metadata[0].name
}

output "settings_config_map" {
  description = "ConfigMap with the non-secret HALLMARK_* settings."
  value       = kubernetes_config_map_v1.settings.metadata[0].name
}

output "settings_secret" {
  description = "Secret with the database and Redis URLs, the Django secret key, the Vault token and the PKCS#11 PIN secret."
  value       = kubernetes_secret_v1.settings.metadata[0].name
}
