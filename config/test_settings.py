"""Settings for the test suite: its own embedded data dir, a fast password hasher, and a
Redis database of its own for each xdist worker (events, caches and Celery queues stay apart).

The servers themselves are started by the test session (tests/embedded_servers.py).
"""

import os
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

os.environ.setdefault(
    "HALLMARK_DATA_DIR", str(Path(__file__).resolve().parent.parent / ".hallmark-test")
)
os.environ.setdefault("HALLMARK_FAST_PASSWORD_HASHER", "true")
# The suite (and the `hallmark up` of its e2e tests, which inherits this environment) signs up
# many tenants from 127.0.0.1; the rate-limit tests lower the limits for their own clients.
os.environ.setdefault("HALLMARK_SIGNUP_RATE_LIMIT", "100000/60")
os.environ.setdefault("HALLMARK_LOGIN_RATE_LIMIT", "100000/60")
# The suite's SNI tests send refused names one after another; the tarpit's own test sets
# its delay (tests/issuance/test_agent_api_edge.py).
os.environ.setdefault("HALLMARK_AGENT_API_REFUSED_NAME_DELAY_MS", "0")
# The suite's upstream tests use the embedded OpenBao PKI as "embedded".
os.environ.setdefault("HALLMARK_EMBEDDED_UPSTREAM", "true")
# The suite's peers' bundle endpoints listen on loopback.
os.environ.setdefault("HALLMARK_FEDERATION_ALLOWED_NETWORKS", "127.0.0.0/8")

from config.settings import *  # noqa: E402,F403
from config.settings import REDIS_URL, _celery_broker_url  # noqa: E402

# Each worker owns databases [16k, 16k + 16) of the session's Redis: the suite's own (base 0)
# and those of the control planes its end-to-end tests start (bases 1-15).
REDIS_DATABASES_PER_WORKER = 16


def worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") else 0


def redis_url_with_db(url: str, base: int) -> str:
    """`url` moved to this worker's database number `base` (0-15)."""
    db = worker_index() * REDIS_DATABASES_PER_WORKER + base
    parts = urlparse(url)
    if parts.scheme == "unix":
        query = parse_qs(parts.query)
        query["db"] = [str(db)]
        return f"unix://{parts.path}?{urlencode(query, doseq=True)}"
    return parts._replace(path=f"/{db}").geturl()


REDIS_URL = redis_url_with_db(REDIS_URL, 0)
CELERY_BROKER_URL = _celery_broker_url(REDIS_URL)
