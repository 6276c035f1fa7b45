# Hallmark's own settings: backing services, key managers and the public endpoints.
# Each maps to one HALLMARK_* environment variable read by config/settings.py; a null
# leaves the setting at the application's default.

# --- backing services (managed elsewhere; this module never creates them) --------------

variable "database_url" {
  description = "HALLMARK_DATABASE_URL: the managed PostgreSQL, e.g. postgresql://hallmark:PASSWORD@db.internal:5432/hallmark?sslmode=require. One database; every tenant gets a schema in it."
  type        = string
  sensitive   = true
  nullable    = false

  validation {
    condition     = can(regex("^postgres(ql)?://", var.database_url))
    error_message = "database_url must be a postgresql:// (or postgres://) URL."
  }
}

variable "redis_url" {
  description = "HALLMARK_REDIS_URL: the managed Redis, e.g. rediss://:PASSWORD@redis.internal:6380/0. It is the Celery broker and carries change events between agent-API replicas."
  type        = string
  sensitive   = true
  nullable    = false

  validation {
    condition     = can(regex("^rediss?://", var.redis_url))
    error_message = "redis_url must be a redis:// or rediss:// URL (a Unix socket cannot be shared between pods)."
  }
}

variable "secret_key" {
  description = "HALLMARK_SECRET_KEY: Django's secret key, required outside the embedded mode. Generate 50+ random characters and keep it stable across applies."
  type        = string
  sensitive   = true
  nullable    = false

  validation {
    condition     = length(var.secret_key) >= 32
    error_message = "secret_key must be at least 32 characters long."
  }
}

variable "vault_addr" {
  description = "HALLMARK_VAULT_ADDR: the Vault or OpenBao server (already initialised and unsealed), e.g. https://vault.internal:8200. Required even with the PKCS#11 key manager: /healthz checks it."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^https?://[^/]+", var.vault_addr)) && !endswith(var.vault_addr, "/")
    error_message = "vault_addr must be an http(s):// URL without a trailing slash."
  }
}

variable "vault_token" {
  description = "HALLMARK_VAULT_TOKEN: the provisioner token (creates tenant transit keys, policies and scoped tenant tokens). Leave empty when vault_token_file is used."
  type        = string
  sensitive   = true
  nullable    = false
  default     = ""
}

variable "vault_token_file" {
  description = "HALLMARK_VAULT_TOKEN_FILE: a path inside the container holding the provisioner token, e.g. one rendered by the Vault Agent injector (see pod_annotations) or mounted through secret_files."
  type        = string
  default     = null

  validation {
    condition     = var.vault_token_file == null ? true : startswith(var.vault_token_file, "/")
    error_message = "vault_token_file must be an absolute path."
  }
}

variable "vault_cacert" {
  description = "HALLMARK_VAULT_CACERT: path in the pod of the PEM CA bundle that signs Vault's TLS certificate (mount it with secret_files, e.g. /etc/hallmark/files/vault-ca.pem); null: the system roots."
  type        = string
  default     = null
}

variable "vault_transit_mount" {
  description = "HALLMARK_VAULT_TRANSIT_MOUNT: the transit secrets engine's mount path (application default: transit)."
  type        = string
  default     = null
}

# --- key managers -------------------------------------------------------------------------

variable "default_key_manager" {
  description = "HALLMARK_DEFAULT_KEY_MANAGER: where new trust domains keep their CA and JWT keys: vault (transit) or pkcs11 (an HSM)."
  type        = string
  default     = "vault"

  validation {
    condition     = contains(["vault", "pkcs11"], var.default_key_manager)
    error_message = "default_key_manager must be vault or pkcs11."
  }
}

variable "pkcs11_module" {
  description = "HALLMARK_PKCS11_MODULE: path of the HSM vendor's PKCS#11 library inside the container, e.g. /opt/hsm/lib/libvendorpkcs11.so (provided by the image or by pkcs11_volume). Null keeps the application default (SoftHSM2's path)."
  type        = string
  default     = null

  validation {
    condition     = var.pkcs11_module == null ? true : startswith(var.pkcs11_module, "/")
    error_message = "pkcs11_module must be an absolute path."
  }
}

variable "pkcs11_pin_secret" {
  description = "HALLMARK_PKCS11_PIN_SECRET: the platform secret every tenant token's PINs are derived from (HMAC of the tenant id). Losing it locks every tenant out of its keys; changing it does too. Leave empty when pkcs11_pin_secret_file is used."
  type        = string
  sensitive   = true
  nullable    = false
  default     = ""
}

variable "pkcs11_pin_secret_file" {
  description = "HALLMARK_PKCS11_PIN_SECRET_FILE: a path inside the container holding the PIN secret (e.g. under /etc/hallmark/files via secret_files)."
  type        = string
  default     = null
}

variable "pkcs11_sessions_per_token" {
  description = "HALLMARK_PKCS11_SESSIONS_PER_TOKEN: PKCS#11 sessions each process keeps open per tenant token (application default: 4). Mind the HSM's session limit: processes x tenants x this."
  type        = number
  default     = null

  validation {
    condition     = var.pkcs11_sessions_per_token == null ? true : var.pkcs11_sessions_per_token >= 1
    error_message = "pkcs11_sessions_per_token must be at least 1."
  }
}

variable "pkcs11_token_lock_file" {
  description = "HALLMARK_PKCS11_TOKEN_LOCK_FILE: a file whose flock serialises tenant token creation between processes. Across pods it only helps on a shared volume with working flock (e.g. inside pkcs11_volume); leave null for network HSMs that serialise slot initialisation themselves."
  type        = string
  default     = null
}

variable "softhsm2_conf" {
  description = "SOFTHSM2_CONF: SoftHSM2's config file, only when SoftHSM2 is the PKCS#11 module (its token directory must then be a volume shared by every pod; not recommended for production)."
  type        = string
  default     = null
}

variable "pkcs11_volume" {
  description = "Optional volume with the HSM client (library, vendor config, certificates), mounted at mount_path in every Hallmark container. Exactly one of host_path (installed on every node) or persistent_volume_claim (an existing claim)."
  type = object({
    mount_path              = string
    host_path               = optional(string)
    persistent_volume_claim = optional(string)
    read_only               = optional(bool, true)
  })
  default = null

  validation {
    condition = var.pkcs11_volume == null ? true : (
      (var.pkcs11_volume.host_path == null) != (var.pkcs11_volume.persistent_volume_claim == null)
      && startswith(var.pkcs11_volume.mount_path, "/")
    )
    error_message = "pkcs11_volume needs an absolute mount_path and exactly one of host_path or persistent_volume_claim."
  }
}

# --- files and upstream authorities ------------------------------------------------------

variable "secret_files" {
  description = "Files (name => content) stored in a Kubernetes Secret and mounted read-only under /etc/hallmark/files/ in every Hallmark container: an upstream-authorities JSON, its CA certificates, a PIN secret file, a SoftHSM2 config."
  type        = map(string)
  sensitive   = true
  nullable    = false
  default     = {}
}

variable "upstream_authorities_file" {
  description = "HALLMARK_UPSTREAM_AUTHORITIES_FILE: the JSON file naming the upstream authorities tenants may choose, e.g. /etc/hallmark/files/upstream-authorities.json (put it in secret_files: it holds credentials)."
  type        = string
  default     = null
}

# --- public endpoints and behaviour -------------------------------------------------------

variable "http_public_url" {
  description = "HALLMARK_HTTP_PUBLIC_URL: the REST API and bundle endpoint's public URL, as tenants reach it (e.g. https://hallmark.example.com). Signup answers it."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^https?://[^/]+$", var.http_public_url))
    error_message = "http_public_url must be scheme://host[:port] without a path or trailing slash."
  }
}

variable "agent_endpoint" {
  description = "HALLMARK_AGENT_ENDPOINT: the agent API's public HOST:PORT that agents dial (a DNS name pointing at the agent-API load balancer). Signup answers it."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[^:/]+:[0-9]+$", var.agent_endpoint))
    error_message = "agent_endpoint must be HOST:PORT, e.g. agents.hallmark.example.com:8081."
  }
}

variable "allowed_hosts" {
  description = "HALLMARK_ALLOWED_HOSTS: Host header values the web process answers (Django ALLOWED_HOSTS). The readiness probe sends the first entry when \"*\" is absent."
  type        = list(string)
  default     = ["*"]

  validation {
    condition     = length(var.allowed_hosts) > 0
    error_message = "allowed_hosts needs at least one entry."
  }
}

variable "log_level" {
  description = "HALLMARK_LOG_LEVEL: the root logger's level."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL."
  }
}

variable "db_conn_max_age" {
  description = "HALLMARK_DB_CONN_MAX_AGE: seconds a database connection is kept for reuse (application default 60). Size PostgreSQL's max_connections for every process of every replica."
  type        = number
  default     = null
}

variable "ttls" {
  description = "Lifetimes in seconds, null for the SPIRE-like defaults: ca (HALLMARK_CA_TTL, 86400), x509_svid (HALLMARK_X509_SVID_TTL, 3600), jwt_svid (HALLMARK_JWT_SVID_TTL, 300), agent_svid (HALLMARK_AGENT_SVID_TTL, 3600)."
  type = object({
    ca         = optional(number)
    x509_svid  = optional(number)
    jwt_svid   = optional(number)
    agent_svid = optional(number)
  })
  nullable = false
  default  = {}

  validation {
    condition     = alltrue([for ttl in values(var.ttls) : ttl == null ? true : ttl > 0])
    error_message = "Every TTL must be a positive number of seconds."
  }
}

variable "rotation_interval" {
  description = "HALLMARK_ROTATION_INTERVAL: seconds between beat's checks of every trust domain's key journal (application default 10)."
  type        = number
  default     = null
}

variable "prune_grace" {
  description = "HALLMARK_PRUNE_GRACE: seconds an expired authority stays in the bundle before it is pruned (application default 86400)."
  type        = number
  default     = null
}

variable "log_format" {
  description = "HALLMARK_LOG_FORMAT: json (one JSON object a line with time, level, logger, message, role, tenant and request id, for a log pipeline) or text."
  type        = string
  default     = "json"

  validation {
    condition     = contains(["json", "text"], var.log_format)
    error_message = "log_format must be json or text."
  }
}

variable "shutdown_grace_seconds" {
  description = "HALLMARK_SHUTDOWN_GRACE_SECONDS: on SIGTERM, how long requests and agent-API calls in flight may take to finish (gunicorn's graceful timeout, the agent API's stop grace). Keep it below termination_grace_period_seconds."
  type        = number
  default     = 20

  validation {
    condition     = var.shutdown_grace_seconds >= 1
    error_message = "shutdown_grace_seconds must be at least 1."
  }
}
