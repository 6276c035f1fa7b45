# hallmark-registrar in a Kubernetes cluster: one Deployment that registers the cluster's pods.

variable "name" {
  description = "Name of the Deployment, its service account, Secret and RBAC objects."
  type        = string
  default     = "hallmark-registrar"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$", var.name))
    error_message = "name must be a DNS label of at most 52 characters."
  }
}

variable "namespace" {
  description = "Namespace the registrar runs in (it exists already, e.g. the agent module's)."
  type        = string
  default     = "hallmark-agent"
}

variable "image" {
  description = "Container image with Hallmark installed by pip (deploy/Dockerfile builds one), so `hallmark-registrar` is on PATH."
  type        = string
  nullable    = false
}

variable "server_url" {
  description = "Hallmark's REST API, https://HOST[:PORT]."
  type        = string
  nullable    = false

  validation {
    condition     = startswith(var.server_url, "https://")
    error_message = "server_url must be an https:// URL: the registrar sends its token there."
  }
}

variable "api_token" {
  description = "An API token with role registrar (POST /api/v1/api-tokens, ideally with a spiffe_id_prefix)."
  type        = string
  sensitive   = true
  nullable    = false
}

variable "cluster" {
  description = "The cluster's name, as in the agent module: it is part of every node alias the registrar writes."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.cluster))
    error_message = "cluster must be lowercase letters, digits and dashes."
  }
}

variable "cluster_domain" {
  description = "The cluster's DNS domain, for {{ .ClusterDomain }} in dnsNameTemplates."
  type        = string
  default     = "cluster.local"
}

variable "parent_id_template" {
  description = "Each pod's parent_id: the alias of its node's agent. Register each node's agent under it (a join token with this spiffe_id, or a node entry)."
  type        = string
  default     = "spiffe://{{ .TrustDomain }}/k8s-node/{{ .ClusterName }}/{{ .PodSpec.NodeName }}"
}

variable "resync_seconds" {
  description = "Full resync period: the cluster listed again and every entry checked."
  type        = number
  default     = 300
}

variable "install_crd" {
  description = "Install the ClusterSPIFFEID CustomResourceDefinition (false: it is managed elsewhere)."
  type        = bool
  default     = true
}

variable "resources" {
  description = "Container resources."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "50m", memory = "128Mi" }
    limits   = { memory = "512Mi" }
  }
}
