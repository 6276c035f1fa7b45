# Where and how the processes run. Hallmark's own settings are in variables_settings.tf.

variable "name" {
  description = "Prefix of every object's name (hallmark-web, hallmark-agent-api, ...) and the app.kubernetes.io/instance label."
  type        = string
  default     = "hallmark"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.name))
    error_message = "name must be a DNS label of at most 40 characters (lower case letters, digits, '-')."
  }
}

variable "namespace" {
  description = "Kubernetes namespace for every object."
  type        = string
  default     = "hallmark"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS label."
  }
}

variable "create_namespace" {
  description = "Create the namespace (false: it already exists)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Extra labels on every object and pod."
  type        = map(string)
  default     = {}
}

# --- image and pods ---------------------------------------------------------------------

variable "image" {
  description = "Container image with Hallmark installed by pip (`pip install .`; deploy/Dockerfile builds one), so `hallmark`, `gunicorn` and `celery` are on PATH. Pin a tag or digest: a new value runs the migration Job again, then rolls the processes."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.image)) > 0 && !can(regex("\\s", var.image))
    error_message = "image must be a non-empty image reference without spaces."
  }
}

variable "image_pull_policy" {
  description = "Image pull policy of every container."
  type        = string
  default     = "IfNotPresent"

  validation {
    condition     = contains(["Always", "IfNotPresent", "Never"], var.image_pull_policy)
    error_message = "image_pull_policy must be Always, IfNotPresent or Never."
  }
}

variable "image_pull_secrets" {
  description = "Names of existing docker-registry Secrets in the namespace."
  type        = list(string)
  default     = []
}

variable "run_as_user" {
  description = "UID (also GID and fsGroup) the containers run as; deploy/Dockerfile's user is 10001."
  type        = number
  default     = 10001

  validation {
    condition     = var.run_as_user > 0
    error_message = "run_as_user must not be root (0)."
  }
}

variable "service_account_name" {
  description = "Existing ServiceAccount for the pods (e.g. one bound to a Vault Kubernetes auth role or a cloud workload identity). Null: the namespace's default."
  type        = string
  default     = null
}

variable "automount_service_account_token" {
  description = "Mount the ServiceAccount token in the pods. Hallmark does not call the Kubernetes API; turn on only for a sidecar that needs it (e.g. the Vault Agent injector's Kubernetes auth)."
  type        = bool
  default     = false
}

variable "pod_annotations" {
  description = "Annotations on every Hallmark pod, e.g. vault.hashicorp.com/agent-inject for a token file (see vault_token_file)."
  type        = map(string)
  default     = {}
}

variable "migration_pod_annotations" {
  description = "Annotations merged over pod_annotations on the migration Job's pod only; with the Vault Agent injector set vault.hashicorp.com/agent-pre-populate-only = \"true\" there, or the Job never completes."
  type        = map(string)
  default     = {}
}

variable "node_selector" {
  description = "Node labels the pods must run on (e.g. nodes that have the HSM client for a host_path pkcs11_volume)."
  type        = map(string)
  default     = {}
}

variable "tolerations" {
  description = "Tolerations of every pod."
  type = list(object({
    key                = optional(string)
    operator           = optional(string, "Equal")
    value              = optional(string)
    effect             = optional(string)
    toleration_seconds = optional(number)
  }))
  default = []
}

variable "termination_grace_period_seconds" {
  description = "Seconds a pod gets after SIGTERM: gunicorn and the agent API drain, a Celery worker finishes its task (acks are late, so an interrupted task is redelivered)."
  type        = number
  default     = 30

  validation {
    condition     = var.termination_grace_period_seconds >= 5
    error_message = "termination_grace_period_seconds must be at least 5."
  }
}

variable "extra_env" {
  description = "Extra environment variables for every container, for a vendor HSM client (e.g. its config path). Hallmark's own HALLMARK_* settings have dedicated variables and are refused here."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.extra_env) : !startswith(name, "HALLMARK_")])
    error_message = "extra_env must not set HALLMARK_* variables; use this module's dedicated variables."
  }
}

# --- process counts and sizes ------------------------------------------------------------

variable "web_replicas" {
  description = "Web (REST API, https_web bundle endpoint, /healthz) pods. Any number: they share no state."
  type        = number
  default     = 2

  validation {
    condition     = var.web_replicas >= 1 && floor(var.web_replicas) == var.web_replicas
    error_message = "web_replicas must be a whole number of at least 1."
  }
}

variable "web_workers" {
  description = "gunicorn worker processes per web pod (4 threads each)."
  type        = number
  default     = 2

  validation {
    condition     = var.web_workers >= 1 && floor(var.web_workers) == var.web_workers
    error_message = "web_workers must be a whole number of at least 1."
  }
}

variable "agent_api_replicas" {
  description = "Agent-API pods (one asyncio process each; scale with pods). Any number: an agent may reach any replica, and changes reach agents on other replicas through Redis."
  type        = number
  default     = 2

  validation {
    condition     = var.agent_api_replicas >= 1 && floor(var.agent_api_replicas) == var.agent_api_replicas
    error_message = "agent_api_replicas must be a whole number of at least 1."
  }
}

variable "bundle_endpoint_replicas" {
  description = "https_spiffe bundle-endpoint pods (one asyncio process each). Any number: each reads the shared bundle cache on every request and keeps no state a peer lacks."
  type        = number
  default     = 2

  validation {
    condition     = var.bundle_endpoint_replicas >= 1 && floor(var.bundle_endpoint_replicas) == var.bundle_endpoint_replicas
    error_message = "bundle_endpoint_replicas must be a whole number of at least 1 (/healthz needs a bundle-endpoint heartbeat)."
  }
}

variable "worker_replicas" {
  description = "Celery worker pods (rotation, bundle publishing, federation refresh, metering). Any number: tasks are idempotent."
  type        = number
  default     = 2

  validation {
    condition     = var.worker_replicas >= 1 && floor(var.worker_replicas) == var.worker_replicas
    error_message = "worker_replicas must be a whole number of at least 1 (/healthz needs a worker heartbeat)."
  }
}

variable "worker_concurrency" {
  description = "Celery worker processes per worker pod."
  type        = number
  default     = 2

  validation {
    condition     = var.worker_concurrency >= 1 && floor(var.worker_concurrency) == var.worker_concurrency
    error_message = "worker_concurrency must be a whole number of at least 1."
  }
}

variable "resources" {
  description = "Requests and limits per process kind (web, agent_api, bundle_endpoint, worker, beat, migrate). No CPU limit by default: throttling a signer costs latency, requests already schedule fairly."
  type = object({
    web = optional(object({
      requests = optional(map(string), { cpu = "250m", memory = "384Mi" })
      limits   = optional(map(string), { memory = "768Mi" })
    }), {})
    agent_api = optional(object({
      requests = optional(map(string), { cpu = "500m", memory = "256Mi" })
      limits   = optional(map(string), { memory = "512Mi" })
    }), {})
    bundle_endpoint = optional(object({
      requests = optional(map(string), { cpu = "100m", memory = "256Mi" })
      limits   = optional(map(string), { memory = "512Mi" })
    }), {})
    worker = optional(object({
      requests = optional(map(string), { cpu = "250m", memory = "384Mi" })
      limits   = optional(map(string), { memory = "768Mi" })
    }), {})
    beat = optional(object({
      requests = optional(map(string), { cpu = "50m", memory = "160Mi" })
      limits   = optional(map(string), { memory = "256Mi" })
    }), {})
    migrate = optional(object({
      requests = optional(map(string), { cpu = "100m", memory = "256Mi" })
      limits   = optional(map(string), { memory = "512Mi" })
    }), {})
  })
  nullable = false
  default  = {}
}

variable "migration_timeout" {
  description = "How long apply waits for the migration Job (public and every tenant schema) before failing."
  type        = string
  default     = "15m"

  validation {
    condition     = can(regex("^[0-9]+(s|m|h)$", var.migration_timeout))
    error_message = "migration_timeout must look like 900s, 15m or 1h."
  }
}

# --- services and ingress -----------------------------------------------------------------

variable "web_service_type" {
  description = "Service type of the web Service (port 8000). ClusterIP behind ingress_enabled is the usual choice."
  type        = string
  default     = "ClusterIP"

  validation {
    condition     = contains(["ClusterIP", "NodePort", "LoadBalancer"], var.web_service_type)
    error_message = "web_service_type must be ClusterIP, NodePort or LoadBalancer."
  }
}

variable "ingress_enabled" {
  description = "Create an Ingress for the web Service (REST API and the https_web bundle endpoint). Never used for the agent API."
  type        = bool
  default     = false
}

variable "ingress_host" {
  description = "Host name the Ingress answers (required with ingress_enabled); usually http_public_url's host."
  type        = string
  default     = null
}

variable "ingress_class_name" {
  description = "IngressClass of the Ingress (null: the cluster default)."
  type        = string
  default     = null
}

variable "ingress_tls_secret_name" {
  description = "Existing kubernetes.io/tls Secret for ingress_host (e.g. made by cert-manager). The https_web bundle endpoint needs a Web PKI certificate."
  type        = string
  default     = null
}

variable "ingress_annotations" {
  description = "Annotations of the Ingress (e.g. cert-manager.io/cluster-issuer)."
  type        = map(string)
  default     = {}
}

variable "agent_api_service_type" {
  description = "Service type of the agent API. LoadBalancer gives agents outside the cluster an L4 address; the agent API terminates TLS itself (per tenant, by SNI), so whatever sits in front must pass TCP through."
  type        = string
  default     = "LoadBalancer"

  validation {
    condition     = contains(["ClusterIP", "NodePort", "LoadBalancer"], var.agent_api_service_type)
    error_message = "agent_api_service_type must be ClusterIP, NodePort or LoadBalancer."
  }
}

variable "agent_api_service_port" {
  description = "Port the agent-API Service (and load balancer) listens on; agent_endpoint names it."
  type        = number
  default     = 8081

  validation {
    condition     = var.agent_api_service_port > 0 && var.agent_api_service_port < 65536
    error_message = "agent_api_service_port must be a TCP port number."
  }
}

variable "agent_api_service_annotations" {
  description = "Annotations of the agent-API Service, e.g. to ask for a network load balancer (service.beta.kubernetes.io/aws-load-balancer-type = \"external\" with nlb-target-type). Annotations that make the load balancer terminate TLS, speak HTTP or add PROXY protocol are refused: agents must reach the pods' own TLS."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for key in keys(var.agent_api_service_annotations) :
      !can(regex("(?i)(ssl|tls|cert)", key))
    ])
    error_message = "agent_api_service_annotations must not configure TLS/SSL certificates on the load balancer: the agent API terminates TLS itself (per tenant, by SNI)."
  }

  validation {
    condition = alltrue([
      for key, value in var.agent_api_service_annotations :
      lower(value) == "tcp" if can(regex("(?i)protocol$", key))
    ])
    error_message = "agent_api_service_annotations may set a load balancer *protocol annotation only to tcp (no http/https/ssl, no PROXY protocol)."
  }
}

variable "agent_api_external_traffic_policy" {
  description = "externalTrafficPolicy of the agent-API Service. Local keeps the agent's source address, which attestation audit records as \"from where\"."
  type        = string
  default     = "Local"

  validation {
    condition     = contains(["Local", "Cluster"], var.agent_api_external_traffic_policy)
    error_message = "agent_api_external_traffic_policy must be Local or Cluster."
  }
}

variable "agent_api_load_balancer_source_ranges" {
  description = "CIDRs allowed to reach the agent-API load balancer (empty: everyone)."
  type        = list(string)
  default     = []
}

variable "bundle_endpoint_service_type" {
  description = "Service type of the https_spiffe bundle endpoint. LoadBalancer gives federated peers outside the cluster an L4 address; the endpoint terminates TLS itself (each tenant's SPIFFE server SVID, by SNI), so whatever sits in front must pass TCP through."
  type        = string
  default     = "LoadBalancer"

  validation {
    condition     = contains(["ClusterIP", "NodePort", "LoadBalancer"], var.bundle_endpoint_service_type)
    error_message = "bundle_endpoint_service_type must be ClusterIP, NodePort or LoadBalancer."
  }
}

variable "bundle_endpoint_service_port" {
  description = "Port the bundle-endpoint Service (and load balancer) listens on; peers' bundle endpoint URL names it (https://HOST:PORT/)."
  type        = number
  default     = 8443

  validation {
    condition     = var.bundle_endpoint_service_port > 0 && var.bundle_endpoint_service_port < 65536
    error_message = "bundle_endpoint_service_port must be a TCP port number."
  }
}

variable "bundle_endpoint_service_annotations" {
  description = "Annotations of the bundle-endpoint Service, e.g. to ask for a network load balancer. Annotations that make the load balancer terminate TLS, speak HTTP or add PROXY protocol are refused: peers must reach the pods' own TLS, which presents the tenant's SPIFFE server SVID."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for key in keys(var.bundle_endpoint_service_annotations) :
      !can(regex("(?i)(ssl|tls|cert)", key))
    ])
    error_message = "bundle_endpoint_service_annotations must not configure TLS/SSL certificates on the load balancer: the bundle endpoint terminates TLS itself (per tenant, by SNI)."
  }

  validation {
    condition = alltrue([
      for key, value in var.bundle_endpoint_service_annotations :
      lower(value) == "tcp" if can(regex("(?i)protocol$", key))
    ])
    error_message = "bundle_endpoint_service_annotations may set a load balancer *protocol annotation only to tcp (no http/https/ssl, no PROXY protocol)."
  }
}

variable "bundle_endpoint_external_traffic_policy" {
  description = "externalTrafficPolicy of the bundle-endpoint Service. The endpoint records no client address, so Cluster (any node forwards) is the default; Local keeps peers' source addresses for network policies."
  type        = string
  default     = "Cluster"

  validation {
    condition     = contains(["Local", "Cluster"], var.bundle_endpoint_external_traffic_policy)
    error_message = "bundle_endpoint_external_traffic_policy must be Local or Cluster."
  }
}

variable "bundle_endpoint_load_balancer_source_ranges" {
  description = "CIDRs allowed to reach the bundle-endpoint load balancer (empty: everyone), e.g. the federated peers' egress addresses."
  type        = list(string)
  default     = []
}

variable "wait_for_load_balancer" {
  description = "Make apply wait until LoadBalancer Services have an address (turn off on clusters without a load balancer controller)."
  type        = bool
  default     = true
}

variable "metrics_port" {
  description = "Container port of the Prometheus /metrics listener (HALLMARK_METRICS_LISTEN) of every process kind that records metrics (all but the bundle endpoint). Not exposed by the public Services or the Ingress; scraped through the metrics Services."
  type        = number
  default     = 9100

  validation {
    condition     = var.metrics_port > 0 && var.metrics_port < 65536 && !contains([8000, 8081], var.metrics_port)
    error_message = "metrics_port must be a port number other than the web (8000) and agent API (8081) ports."
  }
}

variable "prometheus_operator" {
  description = "Create a ServiceMonitor and a PrometheusRule (alerts) for the Prometheus operator. Needs its CRDs (monitoring.coreos.com/v1) in the cluster before planning."
  type        = bool
  default     = false
}

variable "prometheus_labels" {
  description = "Extra labels on the ServiceMonitor and PrometheusRule, e.g. the release label your Prometheus selects them by."
  type        = map(string)
  default     = {}
}
