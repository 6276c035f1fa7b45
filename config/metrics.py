"""Prometheus metrics every Hallmark process records, and the listener that serves them.

Every process kind (web, agent API, Celery worker, beat) serves `GET /metrics` on a listener
of its own (`HALLMARK_METRICS_LISTEN`, HOST:PORT), never on the public HTTP or gRPC port: the
figures are for operators, and a scrape must not go through tenant authentication or the
internet-facing edge. Where a kind forks (gunicorn workers, Celery's prefork pool, several
agent-API processes on one port) `PROMETHEUS_MULTIPROC_DIR` names a directory the processes
of that kind share, and one scrape answers their sum (prometheus-client's multiprocess mode).

No label carries a tenant id, trust domain, SPIFFE ID or address: those are unbounded, and
per-tenant figures are metering's job (`/api/v1/usage`). Labels take values from closed sets
(route templates, RPC method names, status codes, task names, attestor types).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)
LISTEN_VARIABLE = "HALLMARK_METRICS_LISTEN"
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# -- the web tier (config.metricsmiddleware) ---------------------------------------------------
HTTP_REQUESTS = Counter(
    "hallmark_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "hallmark_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_IN_PROGRESS = Gauge(
    "hallmark_http_requests_in_progress",
    "HTTP requests being answered now.",
    multiprocess_mode="livesum",
)

# -- the agent API (issuance.agentapi.metrics) ---------------------------------------------
RPC_CALLS = Counter(
    "hallmark_agentapi_calls",
    "Agent API calls finished, by method and gRPC status code.",
    ["method", "code"],
)
RPC_LATENCY = Histogram(
    "hallmark_agentapi_call_duration_seconds",
    "Time to answer a unary agent API call, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RPC_STREAMS_OPEN = Gauge(
    "hallmark_agentapi_streams_open",
    "Server streams open now, by method (WatchUpdates: agents watching for changes).",
    ["method"],
    multiprocess_mode="livesum",
)
RPC_STREAM_MESSAGES = Counter(
    "hallmark_agentapi_stream_messages",
    "Messages sent on server streams, by method (WatchUpdates: change notices fanned out).",
    ["method"],
)
AGENT_CONNECTIONS = Gauge(
    "hallmark_agentapi_connections",
    "TLS connections from agents relayed to the agent API now (connected agents).",
    multiprocess_mode="livesum",
)
AGENT_API_REFUSED_CONNECTIONS = Counter(
    "hallmark_agentapi_refused_connections",
    "Connections to the agent API closed before the TLS handshake, by reason: "
    "connections_per_source (the source holds its limit), source_refused (over its failed-"
    "attestation limit), unknown_server_name (answered from the ClientHello).",
    ["reason"],
)
SVIDS_MINTED = Counter(
    "hallmark_svids_minted",
    "SVIDs minted, by kind: x509_workload, jwt_workload, x509_agent (attestation or renewal).",
    ["kind"],
)
ATTESTATIONS = Counter(
    "hallmark_attestations",
    "Node attestations, by attestor type and outcome (ok or the gRPC status, lower case).",
    ["type", "outcome"],
)

# -- Celery (config.celerymetrics) and rotation (trustdomains.tasks) ---------------------------
CELERY_TASKS = Counter(
    "hallmark_celery_tasks",
    "Celery tasks finished, by task name and state (succeeded, failed, retried).",
    ["task", "state"],
)
CELERY_TASK_DURATION = Histogram(
    "hallmark_celery_task_duration_seconds",
    "Time a Celery task ran, by task name.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CELERY_TASKS_RUNNING = Gauge(
    "hallmark_celery_tasks_running",
    "Celery tasks running now.",
    multiprocess_mode="livesum",
)
ROTATION_SWEEPS = Counter(
    "hallmark_rotation_sweeps",
    "Rotation sweeps, by outcome: queued, skipped (the previous sweep had not finished: add "
    "workers), empty (no tenant).",
    ["outcome"],
)
ROTATIONS = Counter(
    "hallmark_rotations",
    "Trust domains checked by rotation, by outcome: changed, unchanged, failed.",
    ["outcome"],
)
AUTHORITY_CHANGES = Counter(
    "hallmark_authority_changes",
    "Authority journal changes made by rotation, by kind (x509, jwt) and operation.",
    ["kind", "operation"],
)
BUNDLE_PUBLISHES = Counter(
    "hallmark_bundle_publishes",
    "Bundles published by rotation (a new sequence announced to agents), by outcome.",
    ["outcome"],
)
FEDERATION_FETCHES = Counter(
    "hallmark_federation_fetches",
    "Fetches of federated peers' bundles, by profile (https_web, https_spiffe) and outcome: "
    "changed, unchanged, or the refusal's code (bundle_sequence_lower, bundle_too_large, ...).",
    ["profile", "outcome"],
)


# -- key managers (trustdomains.keymanagers.observed), in every process that signs or makes keys
KEY_MANAGER_LATENCY = Histogram(
    "hallmark_key_manager_call_duration_seconds",
    "Time a key-manager call took, failed ones included, by backend kind (vault, pkcs11) and "
    "operation (sign, public_key, create_key, delete_key, delete_keys).",
    ["kind", "operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
KEY_MANAGER_ERRORS = Counter(
    "hallmark_key_manager_errors",
    "Key-manager calls that failed, by backend kind, operation and error code "
    "(key_manager_unavailable, key_access_denied, or error for anything unforeseen).",
    ["kind", "operation", "code"],
)


def multiprocess_directory() -> str | None:
    return os.environ.get(MULTIPROCESS_VARIABLE) or None


def registry(collectors: Sequence[Collector] = ()) -> CollectorRegistry:
    """What a scrape of this process answers: the sum of its kind's processes, or its own,
    and `collectors` that read their figures at scrape time (config.beatmetrics)."""
    directory = multiprocess_directory()
    if directory is None:
        collected = REGISTRY
    else:
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected, path=directory)
    for collector in collectors:
        collected.register(collector)
    return collected


def mark_process_dead(pid: int | None = None) -> None:
    """Drop a finished process's live gauges (its counters stay in the sum)."""
    directory = multiprocess_directory()
    if directory is not None:
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid(), directory)


def clean_multiprocess_directory() -> None:
    """Empty the multiprocess directory, in the parent of a kind's forked processes at start.

    A container restarted in its pod keeps /tmp: the old processes' live gauges would stay in
    the sum. Counters restart from zero, as any process restart makes them.
    """
    directory = multiprocess_directory()
    if directory is None:
        return
    for leftover in Path(directory).glob("*.db"):
        leftover.unlink(missing_ok=True)


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _parse(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{LISTEN_VARIABLE}={address!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


def serve(
    address: str, *, reuse_port: bool = False, collectors: Sequence[Collector] = ()
) -> ThreadingHTTPServer:
    """Serve `GET /metrics` on `address` (HOST:PORT) from a daemon thread."""
    host, port = _parse(address)
    handler: Any = MetricsHandler.factory(registry(collectors))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener_class: Any = type(
        "MetricsListener", (_Listener,), {"reuse_port": reuse_port, "address_family": family}
    )
    listener: ThreadingHTTPServer = listener_class((host, port), handler)
    threading.Thread(target=listener.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics (pid %d)", host, port, os.getpid())
    return listener


def serve_from_environment(
    *, reuse_port: bool = False, collectors: Sequence[Collector] = ()
) -> ThreadingHTTPServer | None:
    """Serve metrics where HALLMARK_METRICS_LISTEN says, if it says anything."""
    address = os.environ.get(LISTEN_VARIABLE, "").strip()
    if not address:
        return None
    return serve(address, reuse_port=reuse_port, collectors=collectors)
