output "service_account" {
  description = "The registrar's service account (it only reads pods, namespaces and ClusterSPIFFEIDs)."
  value       = kubernetes_service_account_v1.registrar.metadata[0].name
}

output "node_alias_template" {
  description = "Register each node's agent under this alias (join token spiffe_id or node entry)."
  value       = var.parent_id_template
}
