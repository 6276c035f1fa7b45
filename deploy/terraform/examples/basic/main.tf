# Hallmark on an existing cluster with managed PostgreSQL, Redis and Vault.
#
#   export TF_VAR_database_url='postgresql://hallmark:...@db.internal:5432/hallmark?sslmode=require'
#   export TF_VAR_redis_url='rediss://:...@redis.internal:6380/0'
#   export TF_VAR_secret_key="$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')"
#   export TF_VAR_vault_token='...'
#   terraform init && terraform apply

terraform {
  required_version = ">= 1.5"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.25"
    }
  }
}

provider "kubernetes" {
  config_path    = "~/.kube/config"
  config_context = var.kube_context
}

variable "kube_context" {
  description = "kubeconfig context of the target cluster (null: the current one)."
  type        = string
  default     = null
}

variable "database_url" {
  description = "Managed PostgreSQL URL."
  type        = string
  sensitive   = true
}

variable "redis_url" {
  description = "Managed Redis URL."
  type        = string
  sensitive   = true
}

variable "secret_key" {
  description = "Django secret key (50+ random characters, stable across applies)."
  type        = string
  sensitive   = true
}

variable "vault_token" {
  description = "Vault/OpenBao provisioner token."
  type        = string
  sensitive   = true
}

module "hallmark" {
  source = "../.."

  image = "registry.example.com/hallmark:0.1.0"

  database_url = var.database_url
  redis_url    = var.redis_url
  secret_key   = var.secret_key
  vault_addr   = "https://vault.internal:8200"
  vault_token  = var.vault_token

  http_public_url = "https://hallmark.example.com"
  agent_endpoint  = "agents.hallmark.example.com:8081"
  allowed_hosts   = ["hallmark.example.com"]

  web_replicas             = 3
  agent_api_replicas       = 3
  bundle_endpoint_replicas = 2
  worker_replicas          = 2

  ingress_enabled         = true
  ingress_host            = "hallmark.example.com"
  ingress_class_name      = "nginx"
  ingress_tls_secret_name = "hallmark-example-com-tls"
  ingress_annotations = {
    "cert-manager.io/cluster-issuer" = "letsencrypt"
  }

  # A network (L4) load balancer on AWS; other clouds need none for a plain TCP one.
  agent_api_service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type"            = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"          = "internet-facing"
  }

  # Federated peers fetch bundles from https://bundles.hallmark.example.com:8443/ (https_spiffe):
  # TLS ends in the pods as well, so the same kind of L4 load balancer.
  bundle_endpoint_service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type"            = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"          = "internet-facing"
  }
}

output "agent_api_load_balancer" {
  description = "Point agents.hallmark.example.com at this address."
  value       = module.hallmark.agent_api_load_balancer
}

output "bundle_endpoint_load_balancer" {
  description = "Point bundles.hallmark.example.com at this address."
  value       = module.hallmark.bundle_endpoint_load_balancer
}

output "migration_job" {
  description = "The migration Job of this release."
  value       = module.hallmark.migration_job
}
