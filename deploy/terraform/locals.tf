# What every process shares: names, labels, settings, and the command each process runs.

locals {
  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace

  # Writable paths in an otherwise read-only container: the beat schedule and the agent
  # API's private Unix sockets live in the data dir; files from secret_files under files_dir.
  data_dir             = "/var/lib/hallmark"
  files_dir            = "/etc/hallmark/files"
  web_port             = 8000
  agent_api_port       = 8081
  bundle_endpoint_port = 8443

  selector = {
    "app.kubernetes.io/name"     = "hallmark"
    "app.kubernetes.io/instance" = var.name
  }
  labels = merge(var.labels, local.selector, {
    "app.kubernetes.io/part-of"    = "hallmark"
    "app.kubernetes.io/managed-by" = "terraform"
  })

  # Non-secret settings, one ConfigMap key each. null = the application's default applies.
  config_env = {
    HALLMARK_DATA_DIR                  = local.data_dir
    HALLMARK_DEBUG                     = "false"
    HALLMARK_ALLOWED_HOSTS             = join(",", var.allowed_hosts)
    HALLMARK_HTTP_PUBLIC_URL           = var.http_public_url
    HALLMARK_AGENT_ENDPOINT            = var.agent_endpoint
    HALLMARK_LOG_LEVEL                 = var.log_level
    HALLMARK_DB_CONN_MAX_AGE           = var.db_conn_max_age
    HALLMARK_VAULT_ADDR                = var.vault_addr
    HALLMARK_VAULT_TOKEN_FILE          = var.vault_token_file
    HALLMARK_VAULT_TRANSIT_MOUNT       = var.vault_transit_mount
    HALLMARK_VAULT_CACERT              = var.vault_cacert
    HALLMARK_DEFAULT_KEY_MANAGER       = var.default_key_manager
    HALLMARK_PKCS11_MODULE             = var.pkcs11_module
    HALLMARK_PKCS11_PIN_SECRET_FILE    = var.pkcs11_pin_secret_file
    HALLMARK_PKCS11_SESSIONS_PER_TOKEN = var.pkcs11_sessions_per_token
    HALLMARK_PKCS11_TOKEN_LOCK_FILE    = var.pkcs11_token_lock_file
    SOFTHSM2_CONF                      = var.softhsm2_conf
    HALLMARK_UPSTREAM_AUTHORITIES_FILE = var.upstream_authorities_file
    HALLMARK_CA_TTL                    = var.ttls.ca
    HALLMARK_X509_SVID_TTL             = var.ttls.x509_svid
    HALLMARK_JWT_SVID_TTL              = var.ttls.jwt_svid
    HALLMARK_AGENT_SVID_TTL            = var.ttls.agent_svid
    HALLMARK_ROTATION_INTERVAL         = var.rotation_interval
    HALLMARK_PRUNE_GRACE               = var.prune_grace
    HALLMARK_LOG_FORMAT                = var.log_format
    HALLMARK_SHUTDOWN_GRACE_SECONDS    = var.shutdown_grace_seconds
  }
  config_data = { for name, value in local.config_env : name => tostring(value) if value != null }

  # Secret settings, one Secret key each. The settings read an empty value as unset, so the
  # optional ones can default to "" without a sensitive value deciding which keys exist.
  secret_env = {
    HALLMARK_DATABASE_URL      = var.database_url
    HALLMARK_REDIS_URL         = var.redis_url
    HALLMARK_SECRET_KEY        = var.secret_key
    HALLMARK_VAULT_TOKEN       = var.vault_token
    HALLMARK_PKCS11_PIN_SECRET = var.pkcs11_pin_secret
  }

  # Whether secret_files has entries is not itself a secret; the files are.
  has_secret_files = nonsensitive(length(var.secret_files) > 0)

  # Pods roll (and migrations run again) when settings change, not only the image. The hash
  # reveals nothing usable: it covers the secret key and the database password together.
  settings_checksum = nonsensitive(sha256(jsonencode([local.config_data, local.secret_env, var.secret_files])))
  release           = substr(sha256(jsonencode([var.image, local.settings_checksum])), 0, 10)

  # The processes `hallmark up` starts (config/supervisor.py), with the same commands, one
  # process kind per Deployment. Beat is a singleton: exactly one replica, replaced by
  # Recreate so an old and a new beat never overlap during a rollout. serves_metrics: the
  # kind has a /metrics listener (the supervisor's METRICS_KINDS).
  processes = {
    web = {
      replicas = var.web_replicas
      strategy = "RollingUpdate"
      command = [
        "gunicorn", "config.wsgi:application",
        "--bind", "0.0.0.0:${local.web_port}",
        "--workers", tostring(var.web_workers),
        "--threads", "4",
        "--timeout", "60",
        "--graceful-timeout", tostring(var.shutdown_grace_seconds),
        "--config", "python:config.gunicorn_conf",
      ]
      port                = { name = "http", number = local.web_port }
      readiness_path      = "/readyz"
      resources           = var.resources.web
      spread_over_nodes   = true
      disruption_budgeted = true
      serves_metrics      = true
    }
    agent-api = {
      replicas = var.agent_api_replicas
      strategy = "RollingUpdate"
      # --reuse-port as `hallmark up` uses it; a pod runs one process, replicas add more.
      command = [
        "hallmark", "agent-api",
        "--listen", "0.0.0.0:${local.agent_api_port}",
        "--reuse-port",
      ]
      # "tcp-" tells service meshes to treat the port as opaque TCP: TLS ends in the pod.
      port                = { name = "tcp-agent-api", number = local.agent_api_port }
      readiness_path      = null
      resources           = var.resources.agent_api
      spread_over_nodes   = true
      disruption_budgeted = true
      serves_metrics      = true
    }
    bundle-endpoint = {
      replicas = var.bundle_endpoint_replicas
      strategy = "RollingUpdate"
      # The https_spiffe bundle endpoint, as `hallmark up` runs it beside the agent API. It
      # terminates TLS itself (each tenant's SPIFFE server SVID, chosen by SNI), so the port
      # is opaque TCP like the agent API's. It records no metrics: no /metrics listener.
      command = [
        "hallmark", "bundle-endpoint",
        "--listen", "0.0.0.0:${local.bundle_endpoint_port}",
        "--reuse-port",
      ]
      # A port name is at most 15 characters (IANA service name).
      port                = { name = "tcp-bundle", number = local.bundle_endpoint_port }
      readiness_path      = null
      resources           = var.resources.bundle_endpoint
      spread_over_nodes   = true
      disruption_budgeted = true
      serves_metrics      = false
    }
    worker = {
      replicas = var.worker_replicas
      strategy = "RollingUpdate"
      command = [
        "celery", "-A", "config", "worker",
        "--loglevel", "INFO",
        "--concurrency", tostring(var.worker_concurrency),
        "--hostname", "worker@%h",
      ]
      port                = null
      readiness_path      = null
      resources           = var.resources.worker
      spread_over_nodes   = true
      disruption_budgeted = false
      serves_metrics      = true
    }
    beat = {
      replicas = 1
      strategy = "Recreate"
      command = [
        "celery", "-A", "config", "beat",
        "--loglevel", "INFO",
        "--schedule", "${local.data_dir}/celerybeat-schedule",
      ]
      port                = null
      readiness_path      = null
      resources           = var.resources.beat
      spread_over_nodes   = false
      disruption_budgeted = false
      serves_metrics      = true
    }
  }

  # Each process's environment beyond the settings: its role (the `role` of its log lines,
  # as the supervisor sets it) and, where the kind records metrics, its /metrics listener
  # (config/metrics.py). Web and worker fork (gunicorn workers, Celery's prefork pool): their
  # processes share a multiprocess directory in the pod's /tmp and one scrape answers their
  # sum. Agent API and beat are one process a pod.
  metrics_kinds      = [for kind, process in local.processes : kind if process.serves_metrics]
  multiprocess_kinds = ["web", "worker"]
  metrics_env = {
    for kind, process in local.processes : kind => merge(
      { HALLMARK_PROCESS_ROLE = kind },
      process.serves_metrics ? { HALLMARK_METRICS_LISTEN = "0.0.0.0:${var.metrics_port}" } : {},
      contains(local.multiprocess_kinds, kind) ? { PROMETHEUS_MULTIPROC_DIR = "/tmp/prometheus" } : {}
    )
  }

  migrate_command = ["hallmark", "migrate"]

  # Kubelet probes send the pod IP as Host; Django refuses it unless ALLOWED_HOSTS is "*".
  probe_host = contains(var.allowed_hosts, "*") ? null : trimprefix(var.allowed_hosts[0], ".")
}
