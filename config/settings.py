"""Django settings, 12-factor: everything comes from HALLMARK_* environment variables."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from config import embedded, env, logcontext

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env.data_dir()

# The embedded default (config.embedded) is started explicitly by `hallmark up`, the
# `hallmark` commands that need a database, manage.py and the test session, which export
# HALLMARK_DATABASE_URL/REDIS_URL/VAULT_ADDR and HALLMARK_EMBEDDED=true before Django loads
# these settings. Importing the settings never starts a server.
EMBEDDED = env.boolean("HALLMARK_EMBEDDED", False)


# Where a missing server address comes from, for the error that names it.
SERVERS_HINT = (
    "point it at your server, or run through `hallmark up`, `hallmark manage` or manage.py, "
    "which start the embedded servers and set it"
)

DEBUG = env.boolean("HALLMARK_DEBUG", False)
SECRET_KEY = env.optional("HALLMARK_SECRET_KEY") or (
    "embedded-development-only-secret-key" if EMBEDDED else env.text("HALLMARK_SECRET_KEY")
)
ALLOWED_HOSTS = env.text("HALLMARK_ALLOWED_HOSTS", "*").split(",")


def _database(url: str) -> dict[str, object]:
    parts = urlparse(url)
    query = parse_qs(parts.query)
    return {
        "ENGINE": "django_tenants.postgresql_backend",
        "NAME": unquote(parts.path.lstrip("/")) or "hallmark",
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.get("host", [parts.hostname or ""])[0],
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": env.integer("HALLMARK_DB_CONN_MAX_AGE", 60),
        # A kept connection is checked before reuse, so a PostgreSQL restart costs no requests.
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": env.optional("HALLMARK_TEST_DATABASE") or "test_hallmark"},
    }


DATABASES = {"default": _database(env.text("HALLMARK_DATABASE_URL", hint=SERVERS_HINT))}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SHARED_APPS = [
    "django_tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "drf_spectacular",
    "django.contrib.sessions",  # the /login page's session cookie (tenants.web)
    "tenants",
    "federation.managed",
    "federation.schedule",  # the public index of due federation refreshes
    "django.contrib.staticfiles",  # the console's CSS and vendored htmx (served by WhiteNoise)
    "console",
    "tenants.audit",
    "tenants.metering",
    "tenants.billing",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "trustdomains",
    "issuance",
    "federation",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]
TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# `SET search_path` only when the schema changes, not before every statement (it doubled the
# round trips of every request and agent-API call). django-tenants forgets the path on
# rollback and savepoint rollback, which undo a SET (tests/tenants/test_scoping.py).
TENANT_LIMIT_SET_CALLS = True

MIDDLEWARE = [
    "config.metricsmiddleware.RequestMetricsMiddleware",
    "config.requestid.RequestIdMiddleware",
    "tenants.middleware.DatabaseUnavailableMiddleware",
    "tenants.middleware.PublicSchemaMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # CSP, X-Frame-Options DENY and friends on every answer (console.middleware).
    "console.middleware.SecurityHeadersMiddleware",
    # Signups past the per-client limit are answered 429 here, before sessions, CSRF and DRF.
    "tenants.ratelimit.SignupRateLimitMiddleware",
    # Static files from the web process itself (gunicorn has no static server of its own).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    # The server-rendered pages (/login, the console): session cookie and CSRF. DRF's views
    # are CSRF-exempt and authenticate by bearer token only, so the API is unaffected.
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Counts each tenant-token API call in Redis (tenants.metering; no database write).
    "tenants.metering.middleware.ApiCallMeteringMiddleware",
]
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.api.authentication.TenantTokenAuthentication"],
    # Every authenticated view names its `permission_resource`; tenants.roles decides.
    "DEFAULT_PERMISSION_CLASSES": ["tenants.api.permissions.RolePermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["tenants.api.parsers.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "tenants.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hallmark API",
    "DESCRIPTION": "Multi-tenant SPIFFE identity service.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.openapi.add_error_responses",
    ],
}

# Redis: Celery broker and the event bus.
REDIS_URL = env.text("HALLMARK_REDIS_URL", hint=SERVERS_HINT)


def _celery_broker_url(url: str) -> str:
    """Celery's spelling of a Redis URL: kombu reads a Unix socket's db from `virtual_host`."""
    if not url.startswith("unix://"):
        return url
    parts = urlparse(url)
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.path}?virtual_host={db}"


CELERY_BROKER_URL = _celery_broker_url(REDIS_URL)

CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Key managers.
VAULT_ADDR = env.text("HALLMARK_VAULT_ADDR", hint=SERVERS_HINT)
VAULT_TOKEN = env.optional("HALLMARK_VAULT_TOKEN")
VAULT_TOKEN_FILE = env.optional("HALLMARK_VAULT_TOKEN_FILE")
VAULT_TRANSIT_MOUNT = env.text("HALLMARK_VAULT_TRANSIT_MOUNT", "transit")
# PEM CA bundle that signs Vault's TLS certificate (as VAULT_CACERT); unset: the system roots.
VAULT_CACERT = env.optional("HALLMARK_VAULT_CACERT")
DEFAULT_KEY_MANAGER = env.text("HALLMARK_DEFAULT_KEY_MANAGER", "vault")
# PKCS#11 (SoftHSM2 in development and tests): a token per tenant, PINs derived from a secret
# that comes from the environment or a file, never the database. The embedded mode keeps
# SoftHSM2's config and tokens under DATA_DIR/softhsm and generates the secret there (0600).
_SOFTHSM_DIR = DATA_DIR / "softhsm"
PKCS11_MODULE = env.text("HALLMARK_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
PKCS11_PIN_SECRET = env.optional("HALLMARK_PKCS11_PIN_SECRET")
PKCS11_PIN_SECRET_FILE = env.optional("HALLMARK_PKCS11_PIN_SECRET_FILE") or (
    str(_SOFTHSM_DIR / "pin-secret") if EMBEDDED else None
)
PKCS11_SOFTHSM2_CONF = env.optional("SOFTHSM2_CONF") or (
    str(_SOFTHSM_DIR / "softhsm2.conf") if EMBEDDED else None
)
PKCS11_TOKEN_LOCK_FILE = env.optional("HALLMARK_PKCS11_TOKEN_LOCK_FILE") or (
    str(_SOFTHSM_DIR / "token-init.lock") if EMBEDDED else None
)
PKCS11_SESSIONS_PER_TOKEN = env.integer("HALLMARK_PKCS11_SESSIONS_PER_TOKEN", 4)

# Upstream authorities (optional per trust domain, as SPIRE's UpstreamAuthority): the trust
# domain's CAs become intermediates signed by a Vault/OpenBao PKI mount. Named here by the
# operator (a JSON file: {"name": {"address", "mount", "token" | "token_file", "ca_file"}});
# tenants choose one by name. Credentials live in configuration, never in the database. The
# embedded default offers "embedded": a PKI mount of the embedded OpenBao with its own root.
UPSTREAM_AUTHORITIES_FILE = env.optional("HALLMARK_UPSTREAM_AUTHORITIES_FILE")
EMBEDDED_UPSTREAM_MOUNT = embedded.EMBEDDED_UPSTREAM_MOUNT
# "embedded" chains every tenant that chooses it to one root, so it is offered only where the
# operator turns it on (`hallmark demo` and the test suite do); off, no tenant sees it.
EMBEDDED_UPSTREAM = env.boolean("HALLMARK_EMBEDDED_UPSTREAM", False)

# Agent API: how many processes `hallmark up` runs on the one gRPC port (SO_REUSEPORT); each
# is one event loop, so more processes mint more SVIDs a second on more cores.
AGENT_API_PROCESSES = env.integer("HALLMARK_AGENT_API_PROCESSES", 2)
# The web tier's gunicorn worker processes (4 threads each) and the Celery worker's processes.
WEB_WORKERS = env.integer("HALLMARK_WEB_WORKERS", 2)
WORKER_CONCURRENCY = env.integer("HALLMARK_WORKER_CONCURRENCY", 2)
# The agent API's public listener (hallmark/relaylimits.py): connections one source address
# (an IPv6 /64) may hold, and how long a TLS handshake and a quiet connection may last.
AGENT_API_MAX_CONNECTIONS_PER_SOURCE = env.integer(
    "HALLMARK_AGENT_API_MAX_CONNECTIONS_PER_SOURCE", 128
)
AGENT_API_IDLE_TIMEOUT = env.integer("HALLMARK_AGENT_API_IDLE_TIMEOUT", 900)
AGENT_API_HANDSHAKE_TIMEOUT = env.integer("HALLMARK_AGENT_API_HANDSHAKE_TIMEOUT", 10)
# A handshake naming a trust domain nobody has is answered (unrecognized_name) only after this
# many milliseconds (a tarpit; 0: at once); it counts as a connection of its source meanwhile.
AGENT_API_REFUSED_NAME_DELAY_MS = env.integer("HALLMARK_AGENT_API_REFUSED_NAME_DELAY_MS", 1000)
# `hallmark up` runs the web tier this much nicer (lower CPU priority) than the agent API,
# whose serving path (agents' syncs and renewals) matters more than signups (0-19).
WEB_NICE = env.integer("HALLMARK_WEB_NICE", 5)
# Graceful drain on SIGTERM: how long in-flight HTTP requests and agent-API calls may take to
# finish before they are cut (gunicorn's graceful timeout, the agent API's grpc stop grace).
SHUTDOWN_GRACE_SECONDS = env.integer("HALLMARK_SHUTDOWN_GRACE_SECONDS", 10)
# Failed attestations per source address: past the limit in a window, the address is refused
# (RESOURCE_EXHAUSTED rate_limited) until the window ends; each tenant's audit trail gets the
# first failure of a source and window, then one row with the count of the rest.
ATTEST_FAILURE_LIMIT = env.integer("HALLMARK_ATTEST_FAILURE_LIMIT", 20)
ATTEST_FAILURE_WINDOW_SECONDS = env.integer("HALLMARK_ATTEST_FAILURE_WINDOW", 60)
# A refused attestation (rate_limited) is answered after this many milliseconds (a tarpit;
# 0: at once); a source with 8 refusals waiting is answered at once and disconnected.
ATTEST_REFUSAL_DELAY_MS = env.integer("HALLMARK_ATTEST_REFUSAL_DELAY_MS", 1000)

# Public endpoints advertised to tenants (signup answers them).
HTTP_PUBLIC_URL = env.text("HALLMARK_HTTP_PUBLIC_URL", "http://127.0.0.1:8000")
AGENT_ENDPOINT = env.text("HALLMARK_AGENT_ENDPOINT", "127.0.0.1:8081")
# Host names no entry may put into an SVID, besides the hosts above, localhost and IP literals
# (comma-separated; issuance.services.dns_policy).
RESERVED_DNS_NAMES = [
    n for n in (env.optional("HALLMARK_RESERVED_DNS_NAMES") or "").split(",") if n.strip()
]

# The public edge (tenants.ratelimit, tenants.reserved, tenants.api.parsers). Bodies above
# this many bytes answer 413 request_too_large (Django's limit; DRF >= 3.17.2 applies it to
# JSON bodies too).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.integer("HALLMARK_MAX_REQUEST_BODY_BYTES", 2 * 1024 * 1024)
# Per-client limits, COUNT/SECONDS, counted in Redis across replicas: 429 rate_limited. Every
# attempt counts. The embedded (development, demo) default allows more signups from one host.
SIGNUP_RATE_LIMIT = env.rate("HALLMARK_SIGNUP_RATE_LIMIT", "100/3600" if EMBEDDED else "10/3600")
LOGIN_RATE_LIMIT = env.rate("HALLMARK_LOGIN_RATE_LIMIT", "10/300")
# Signups provisioned at once across the platform (tenants.signupgate), and how many seconds
# an admitted signup waits for a slot before it is answered 503 busy with Retry-After.
SIGNUP_CONCURRENCY = env.integer("HALLMARK_SIGNUP_CONCURRENCY", 1)
SIGNUP_WAIT_SECONDS = env.integer("HALLMARK_SIGNUP_WAIT", 2)
# Reverse proxies in front of the web replicas that append to X-Forwarded-For (0: none).
TRUSTED_PROXY_COUNT = env.integer("HALLMARK_TRUSTED_PROXY_COUNT", 0)
# Trust domains no tenant may take, besides the platform's hostnames, localhost and IP
# literals: comma-separated; "*.example.com" reserves example.com and every name under it.
RESERVED_TRUST_DOMAINS = env.names("HALLMARK_RESERVED_TRUST_DOMAINS")

# The audit trail (tenants.audit): how often beat signs a checkpoint of every chain that grew,
# and after how many days whole checkpointed segments are dropped (0: never, the default).
AUDIT_CHECKPOINT_INTERVAL_SECONDS = env.integer("HALLMARK_AUDIT_CHECKPOINT_INTERVAL", 300)
AUDIT_RETENTION_DAYS = env.integer("HALLMARK_AUDIT_RETENTION_DAYS", 0)

# Defaults as SPIRE's (SPIRE-BEHAVIOUR.md).
CA_TTL_SECONDS = env.integer("HALLMARK_CA_TTL", 24 * 3600)
X509_SVID_TTL_SECONDS = env.integer("HALLMARK_X509_SVID_TTL", 3600)
JWT_SVID_TTL_SECONDS = env.integer("HALLMARK_JWT_SVID_TTL", 300)
AGENT_SVID_TTL_SECONDS = env.integer("HALLMARK_AGENT_SVID_TTL", 3600)
# Rotation (trustdomains.tasks): how often beat checks every trust domain's journal, and how
# long an expired authority stays in the bundle before it is pruned (SPIRE: 24 h).
ROTATION_INTERVAL_SECONDS = env.integer("HALLMARK_ROTATION_INTERVAL", 10)
PRUNE_GRACE_SECONDS = env.integer("HALLMARK_PRUNE_GRACE", 24 * 3600)
# Forced rotation (trustdomains.localauthority) makes keys: at most this many authorities of
# a kind held (not yet pruned) by a trust domain, and forced prepares of a kind an hour.
MAX_AUTHORITIES = env.integer("HALLMARK_MAX_AUTHORITIES", 10)
FORCED_PREPARES_PER_HOUR = env.integer("HALLMARK_FORCED_PREPARES_PER_HOUR", 6)

# Argon2 (memory-hard) hashes new passwords; PBKDF2 still checks older hashes, which Django
# rehashes with Argon2 at the next successful login. The test suite may ask for a fast one.
# Both are Django's, computed on a few threads whose nice value is raised by
# PASSWORD_HASH_NICE (tenants.passwords): a burst of signups or logins yields the cores to
# the agent API.
PRODUCTION_PASSWORD_HASHERS = [
    "tenants.passwords.LowPriorityArgon2PasswordHasher",
    "tenants.passwords.LowPriorityPBKDF2PasswordHasher",
]
PASSWORD_HASH_NICE = env.integer("HALLMARK_PASSWORD_HASH_NICE", 10)
PASSWORD_HASHERS = (
    ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if env.boolean("HALLMARK_FAST_PASSWORD_HASHER", False)
    else PRODUCTION_PASSWORD_HASHERS
)

# HALLMARK_LOG_FORMAT=json|text (config.logcontext): one JSON object a line, or readable text.
LOGGING = logcontext.logging_config(env.text("HALLMARK_LOG_LEVEL", "INFO"))
# Observability, read by config.metrics and config.logcontext themselves (gunicorn's master and
# Celery read them before Django is set up); named here as every setting is. `hallmark up`
# sets the first three for each process it runs (`--metrics`).
METRICS_LISTEN = env.optional("HALLMARK_METRICS_LISTEN")
PROMETHEUS_MULTIPROC_DIR = env.optional("PROMETHEUS_MULTIPROC_DIR")
PROCESS_ROLE = env.optional("HALLMARK_PROCESS_ROLE")
LOG_FORMAT = env.text("HALLMARK_LOG_FORMAT", "text")  # json or text: logging_config checks it
METRICS_ADDR = env.optional("HALLMARK_METRICS_ADDR")  # `hallmark up --metrics`'s default

# Federation (federation/): the fetcher of peers' bundles. Loopback, private and link-local
# targets are refused unless their network is listed here (CIDRs, comma-separated).
FEDERATION_ALLOWED_NETWORKS = env.names("HALLMARK_FEDERATION_ALLOWED_NETWORKS")
# CA bundle (PEM file) for https_web endpoints; empty: the system's trust store.
FEDERATION_CA_BUNDLE = env.optional("HALLMARK_FEDERATION_CA_BUNDLE") or ""
# Seconds between sweeps for due refreshes, and an optional cap on a peer's refresh hint.
FEDERATION_SWEEP_SECONDS = env.integer("HALLMARK_FEDERATION_SWEEP_SECONDS", 10)
FEDERATION_MAX_REFRESH_SECONDS = env.integer("HALLMARK_FEDERATION_MAX_REFRESH_SECONDS", 0)

# The web console (console/): static files are served by WhiteNoise from the apps' static/
# folders (found at start, no collectstatic step), with far-future caching for hashed names.
STATIC_URL = "/static/"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
# Session and CSRF cookies: HttpOnly, SameSite=Lax, and Secure outside the embedded
# (development and demo) default, where the plane speaks plain http on localhost.
SECURE_COOKIES = env.boolean("HALLMARK_SECURE_COOKIES", not EMBEDDED)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_AGE = env.integer("HALLMARK_WEB_SESSION_SECONDS", 8 * 3600)
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = SECURE_COOKIES
LOGIN_URL = "/login"
# Behind a load balancer that ends TLS the web process sees http while browsers send
# `Origin: https://...`: the public URL's origin is trusted for CSRF, plus any listed here.
CSRF_TRUSTED_ORIGINS = [
    "{0.scheme}://{0.netloc}".format(urlparse(HTTP_PUBLIC_URL)),
    *env.names("HALLMARK_CSRF_TRUSTED_ORIGINS"),
]
# Metering (tenants.metering.gauges): functions run in a tenant's schema that count what it
# holds, owned by the apps that own the rows (tenants imports no tenant app).
METERING_GAUGES = ["issuance.services.usage.gauges", "federation.usage.gauges"]
# How often beat rolls Redis counters up into the database, and samples the gauges.
METERING_ROLLUP_SECONDS = env.integer("HALLMARK_METERING_ROLLUP_SECONDS", 60)
METERING_SAMPLE_SECONDS = env.integer("HALLMARK_METERING_SAMPLE_SECONDS", 300)
