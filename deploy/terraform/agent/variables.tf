# The Hallmark agent on every node of a Kubernetes cluster (a DaemonSet).

variable "name" {
  description = "Name of the DaemonSet, its service account, ConfigMap and RBAC objects."
  type        = string
  default     = "hallmark-agent"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$", var.name))
    error_message = "name must be a DNS label of at most 52 characters."
  }
}

variable "namespace" {
  description = "Namespace the agent runs in."
  type        = string
  default     = "hallmark-agent"
}

variable "create_namespace" {
  description = "Create the namespace (false: it already exists)."
  type        = bool
  default     = true
}

variable "image" {
  description = "Container image with Hallmark installed by pip (deploy/Dockerfile builds one), so `hallmark-agent` is on PATH."
  type        = string
  nullable    = false
}

variable "server" {
  description = "The control plane's agent API, HOST:PORT (the tenant's `agent_endpoint` from signup)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[^:/\\s]+:[0-9]+$", var.server))
    error_message = "server must be HOST:PORT."
  }
}

variable "trust_domain" {
  description = "The tenant's trust domain."
  type        = string
  nullable    = false
}

variable "trust_bundle_url" {
  description = "https:// URL of the tenant's bundle (`bundle_url` from signup), used to trust the server on first attestation."
  type        = string
  nullable    = false

  validation {
    condition     = startswith(var.trust_bundle_url, "https://")
    error_message = "trust_bundle_url must be an https:// URL."
  }
}

variable "cluster" {
  description = "Cluster name for the k8s_psat node attestor; must match the tenant's k8s_psat attestor configuration (`/api/v1/node-attestors`)."
  type        = string
  nullable    = false
}

variable "token_audience" {
  description = "Audience of the projected service-account token the agent attests with (k8s_psat); the tenant's k8s_psat configuration must expect it."
  type        = string
  default     = "hallmark"
}

variable "token_expiration_seconds" {
  description = "Lifetime of the projected service-account token; the kubelet renews it at 80 %."
  type        = number
  default     = 7200

  validation {
    condition     = var.token_expiration_seconds >= 600
    error_message = "token_expiration_seconds must be at least 600 (the Kubernetes minimum)."
  }
}

variable "socket_host_dir" {
  description = "Host directory holding the Workload API socket (agent.sock); workloads mount it (hostPath, read-only) and set SPIFFE_ENDPOINT_SOCKET=unix://<mount>/agent.sock."
  type        = string
  default     = "/run/hallmark-agent/sockets"
}

variable "skip_kubelet_verification" {
  description = "Do not verify the kubelet's serving certificate (k8s workload attestor). Needed when kubelets serve self-signed certificates; false when kubelet serving certificates are signed by the cluster CA (serverTLSBootstrap)."
  type        = bool
  default     = false
}

variable "unix_workload_attestor" {
  description = "Also run the unix workload attestor (unix:uid, unix:path, ... selectors beside the k8s ones)."
  type        = bool
  default     = true
}

variable "resources" {
  description = "CPU and memory requests and limits of the agent container."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "50m", memory = "96Mi" }
    limits   = { memory = "256Mi" }
  }
}

variable "tolerations" {
  description = "Tolerations, so the agent also runs on tainted nodes (e.g. control-plane nodes)."
  type = list(object({
    key      = optional(string)
    operator = optional(string, "Exists")
    value    = optional(string)
    effect   = optional(string)
  }))
  default = []
}
