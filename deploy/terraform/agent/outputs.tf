output "socket_host_dir" {
  description = "Host directory of the Workload API socket: mount it into workloads and set SPIFFE_ENDPOINT_SOCKET=unix://<mount>/agent.sock."
  value       = var.socket_host_dir
}

output "agent_toml" {
  description = "The agent's configuration as deployed."
  value       = local.agent_toml
}
