"""Health: `GET /healthz` for the whole control plane, `GET /readyz` for one web process.

Both answer each part as "ok" or "down" only; the reason a part is down goes to the logs.
`/healthz` answers 200 only when the database, Redis, OpenBao, the agent API and Celery all
answer (what `hallmark up` waits for). `/readyz` answers 200 when this web process can serve
requests — its database and Redis answer — so a load balancer keeps sending it traffic while
a worker or the agent API is being replaced elsewhere.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import redis
import requests
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

log = logging.getLogger("hallmark.health")
HEARTBEAT_KEY = "hallmark:heartbeat:{component}"
PROCESS_KEY = "hallmark:heartbeat-process:{component}:{process}"
HEARTBEAT_MAX_AGE = 30.0


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def beat(component: str, client: redis.Redis | None = None) -> None:
    """Record that a component (agent-api, worker, beat) is alive, and this very process of it
    (its own key, host:pid, for the operators' page: one line per agent-API process)."""
    client = client or redis_client()
    now = str(time.time())
    client.set(HEARTBEAT_KEY.format(component=component), now, ex=int(HEARTBEAT_MAX_AGE * 2))
    client.set(
        PROCESS_KEY.format(component=component, process=f"{socket.gethostname()}:{os.getpid()}"),
        now,
        ex=int(HEARTBEAT_MAX_AGE * 2),
    )


def process_heartbeats(component: str, client: redis.Redis) -> list[dict[str, object]]:
    """Each process of a component that beat within the last minute: host:pid and its age."""
    prefix = PROCESS_KEY.format(component=component, process="")
    now = time.time()
    found = []
    for key in client.scan_iter(match=prefix + "*", count=500):
        value = client.get(key)
        if value is None:
            continue
        name = key.decode()[len(prefix) :] if isinstance(key, bytes) else str(key)[len(prefix) :]
        age = now - float(value)
        found.append({"process": name, "age": round(age, 1), "ok": age < HEARTBEAT_MAX_AGE})
    return sorted(found, key=lambda p: str(p["process"]))


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_vault() -> str:
    answer = requests.get(
        f"{settings.VAULT_ADDR}/v1/sys/health", timeout=2, verify=settings.VAULT_CACERT or True
    )
    return (
        "ok" if answer.status_code == 200 else f"status {answer.status_code} (sealed or standby?)"
    )


def _check_heartbeats(client: redis.Redis) -> dict[str, str]:
    found: dict[str, str] = {}
    for component in ("agent-api", "bundle-endpoint", "worker"):
        value = client.get(HEARTBEAT_KEY.format(component=component))
        if value is None:
            found[component] = "no heartbeat"
        else:
            age = time.time() - float(value)
            found[component] = "ok" if age < HEARTBEAT_MAX_AGE else f"stale ({age:.0f}s)"
    return found


def _run_checks(*, whole_plane: bool) -> dict[str, str]:
    """Each part's state in detail: "ok", or what is wrong (for the logs, not for callers)."""
    checks: dict[str, str] = {}
    named = [("database", _check_database)] + ([("vault", _check_vault)] if whole_plane else [])
    for name, check in named:
        try:
            checks[name] = check()
        except Exception as exc:  # every failure is reported, none is raised
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"
    try:
        client = redis_client()
        client.ping()
        checks["redis"] = "ok"
        if whole_plane:
            checks.update(_check_heartbeats(client))
    except Exception as exc:
        checks["redis"] = f"error: {exc.__class__.__name__}: {exc}"
    return checks


def platform_checks() -> dict[str, str]:
    """Every part of the plane in detail, for the operators' health page (signed-in only)."""
    return _run_checks(whole_plane=True)


_last_logged: dict[str, str] = {}


def _log_changes(details: dict[str, str]) -> None:
    """Log a part's detail when it changes, so a flood of probes does not flood the logs."""
    for part, detail in details.items():
        if _last_logged.get(part) != detail:
            _last_logged[part] = detail
            if detail == "ok":
                log.info("health: %s is ok again", part)
            else:
                log.warning("health: %s is down: %s", part, detail)


def _answer(details: dict[str, str]) -> JsonResponse:
    """Up or down per part: callers are anonymous, so what went wrong stays in the logs.

    Exception text names hosts, ports, paths and library versions; none of it is for the
    internet. `hallmark up` and load balancers need only which part is not ready.
    """
    _log_changes(details)
    checks = {part: "ok" if detail == "ok" else "down" for part, detail in details.items()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )


def healthz(request: HttpRequest) -> JsonResponse:
    """The whole control plane: database, Redis, OpenBao, agent API and worker heartbeats."""
    return _answer(_run_checks(whole_plane=True))


def readyz(request: HttpRequest) -> JsonResponse:
    """This web process: its database and Redis (a readiness probe per replica)."""
    return _answer(_run_checks(whole_plane=False))


def start_heartbeat(component: str, interval: float = 5.0) -> None:
    """Beat for `component` from a daemon thread for as long as the process lives."""
    import threading

    def loop() -> None:
        client = redis_client()
        while True:
            try:
                beat(component, client)
            except Exception:  # Redis down: /healthz reports it; keep trying
                client = redis_client()
            time.sleep(interval)

    threading.Thread(target=loop, name=f"heartbeat-{component}", daemon=True).start()
