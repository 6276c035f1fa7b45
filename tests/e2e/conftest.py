"""End-to-end fixtures: a real `hallmark up` and real `hallmark-agent` processes.

The control plane runs against the test session's embedded PostgreSQL, Redis and OpenBao as if
they were external servers (HALLMARK_*_URL set), in a database of its own, so this also covers
the "external servers" mode of `hallmark up`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
import requests

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]


def run_hallmark(*args: str, timeout: float, **overrides: str) -> subprocess.CompletedProcess[str]:
    """`hallmark <args>` against the session's servers, with some variables changed."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(overrides)
    return subprocess.run(  # noqa: S603 - our own CLI
        [str(BIN / "hallmark"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Listening ports for the planes come from below the kernel's ephemeral range (32768 and up
# on Linux): a port the kernel handed out and took back (bind to port 0) may go to the next
# outgoing connection of any process before `hallmark up` binds it, which with several test
# workers starting planes at once it did.
# Each xdist worker takes its own slice of that range, and a port handed out once is never
# handed out again by this process: a free port is only free until someone binds it, so two
# workers' planes (or one plane's HTTP port and its metrics ports, chosen before either is
# bound) could otherwise pick the same one, which in a fresh-clone CI run they did.
LISTEN_PORTS = range(20000, 32000)
_HANDED_OUT: set[int] = set()


def _this_workers_ports() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") else 0
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), index + 1)
    size = len(LISTEN_PORTS) // workers
    return range(LISTEN_PORTS.start + index * size, LISTEN_PORTS.start + (index + 1) * size)


def free_port() -> int:
    return free_ports(1)


def _database_for_e2e(url: str) -> str:
    """A fresh database on the session's PostgreSQL for this control plane: a copy of a
    migrated template (CREATE DATABASE ... TEMPLATE copies its files), so `hallmark up` finds
    every migration applied instead of applying them all (~2-3 s of each plane's start on 2
    cores). What `up` does with an empty database is covered by `make demo` and its test."""
    name = f"hallmark_e2e_{uuid.uuid4().hex[:8]}"
    template = _migrated_template(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return _on_database(url, name)


def _on_database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


_TEMPLATES: dict[str, str] = {}


def _rename_when_left(conn: psycopg.Connection[Any], old: str, new: str) -> None:
    """Rename a database once the last backend of a client that just exited has gone too
    (PostgreSQL refuses while one is still connected, which it can be for a moment)."""
    for _ in range(100):
        try:
            conn.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.1)
    raise AssertionError(f"database {old} stayed in use for 10 s")


def _migrated_template(url: str) -> str:
    """A database that `hallmark migrate` brought to this checkout's migrations, made once
    per session's PostgreSQL (named by the migrations' content, so an edited migration makes
    a new one) under an advisory lock: the xdist workers share it."""
    if url in _TEMPLATES:
        return _TEMPLATES[url]
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("*/migrations/*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    name = f"hallmark_e2e_template_{digest.hexdigest()[:12]}"
    building = f"{name}_building"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [name])
        try:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if exists.fetchone() is None:
                # A build that died half-way is dropped; the template only gets its name
                # once `hallmark migrate` has finished with it.
                conn.execute(f'DROP DATABASE IF EXISTS "{building}"')
                conn.execute(f'CREATE DATABASE "{building}"')
                migrated = run_hallmark(
                    "migrate",
                    timeout=300,
                    HALLMARK_DATABASE_URL=_on_database(url, building),
                    HALLMARK_SECRET_KEY="e2e-template-" + secrets.token_hex(8),
                )
                assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
                _rename_when_left(conn, building, name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
    _TEMPLATES[url] = name
    return name


@dataclass
class ControlPlaneProcess:
    """A running `hallmark up` and how to reach it."""

    http: str
    grpc: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # The environment `up` runs with: other `hallmark` commands reach the same servers with it.
    env: dict[str, str] = field(default_factory=dict)
    bundle_endpoint: str = ""  # host:port of its https_spiffe bundle endpoint
    metrics_port: int | None = None  # web's; agent API, worker and beat follow (--metrics)

    def metrics_url(self, kind: str) -> str:
        assert self.metrics_port is not None, "this plane was started without --metrics"
        offset = ("web", "agent-api", "worker", "beat").index(kind)
        return f"http://127.0.0.1:{self.metrics_port + offset}/metrics"

    def signup(self, label: str, **extra: str) -> dict[str, str]:
        trust_domain = f"{label}-{secrets.token_hex(3)}.e2e.test"
        answer = requests.post(
            f"{self.http}/api/v1/signup",
            json={
                "name": label,
                "trust_domain": trust_domain,
                "email": f"ops@{trust_domain}",
                "password": "correct horse battery staple",
                **extra,
            },
            timeout=60,
        )
        assert answer.status_code == 201, answer.text
        return answer.json()

    def call(self, token: str, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(
            method,
            f"{self.http}/api/v1/{path}",
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
            **kwargs,
        )  # type: ignore[arg-type]

    def start_agent(
        self, trust_domain: str, join_token: str | None, work: Path, *extra: str
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start `hallmark-agent run`; without a join token it resumes from its data dir."""
        work.mkdir(parents=True, exist_ok=True)
        socket_path = work / "agent.sock"
        log = open(work / "agent.log", "ab")  # noqa: SIM115
        token = [f"--join-token={join_token}"] if join_token else []
        if any(str(arg).startswith("http://") for arg in extra):
            # The test plane serves bundles over plain http, which the agent accepts only
            # with --insecure-bootstrap (a production plane serves them over https).
            extra = (*extra, "--insecure-bootstrap")
        agent = subprocess.Popen(
            [
                str(BIN / "hallmark-agent"),
                "run",
                "--server",
                self.grpc,
                "--trust-domain",
                trust_domain,
                *token,
                "--socket",
                str(socket_path),
                "--data-dir",
                str(work / "data"),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.agents.append(agent)
        return agent, socket_path


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (for `hallmark up --metrics`)."""
    ports = _this_workers_ports()
    for _ in range(200):
        first = ports.start + secrets.randbelow(len(ports) - count)
        block = range(first, first + count)
        if not _HANDED_OUT.isdisjoint(block):
            continue
        try:
            for port in block:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _HANDED_OUT.update(block)
        return first
    raise AssertionError(f"no {count} consecutive free ports")


def launch_control_plane(
    data_dir: Path,
    env: dict[str, str],
    http_port: int,
    grpc_port: int,
    bundle_endpoint_port: int | None = None,
    metrics_port: int | None = None,
) -> ControlPlaneProcess:
    """Start `hallmark up` and wait until /healthz answers 200."""
    bundle_endpoint = f"127.0.0.1:{bundle_endpoint_port or free_port()}"
    log = open(data_dir / "up.log", "ab")  # noqa: SIM115
    metrics = ["--metrics", f"127.0.0.1:{metrics_port}"] if metrics_port else []
    process = subprocess.Popen(
        [
            str(BIN / "hallmark"),
            "up",
            "--data-dir",
            str(data_dir),
            "--http",
            f"127.0.0.1:{http_port}",
            "--grpc",
            f"127.0.0.1:{grpc_port}",
            "--bundle-endpoint",
            bundle_endpoint,
            *metrics,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    plane = ControlPlaneProcess(
        f"http://127.0.0.1:{http_port}",
        f"127.0.0.1:{grpc_port}",
        data_dir,
        process,
        env=env,
        bundle_endpoint=bundle_endpoint,
        metrics_port=metrics_port,
    )

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"hallmark up exited: {(data_dir / 'up.log').read_text()[-3000:]}")
        try:
            return requests.get(f"{plane.http}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(healthy, 180, "hallmark up to become healthy")
    return plane


def stop_control_plane(plane: ControlPlaneProcess, *, agents: bool = True) -> None:
    if agents:
        for agent in plane.agents:
            if agent.poll() is None:
                agent.terminate()
                agent.wait(timeout=10)
    plane.process.send_signal(signal.SIGTERM)
    try:
        plane.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        plane.process.kill()


def control_plane_env(redis_db: int = 1) -> dict[str, str]:
    """The session's servers as external ones, in a database (and Redis db) of its own."""
    from django.conf import settings  # the session's embedded servers are up by now

    from config.test_settings import redis_url_with_db

    env = dict(os.environ)
    env["HALLMARK_DATABASE_URL"] = _database_for_e2e(os.environ["HALLMARK_DATABASE_URL"])
    env["HALLMARK_REDIS_URL"] = redis_url_with_db(os.environ["HALLMARK_REDIS_URL"], redis_db)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["HALLMARK_SECRET_KEY"] = "e2e-" + secrets.token_hex(16)
    env["HALLMARK_UPSTREAM_AUTHORITIES_FILE"] = _upstream_authorities_file(settings)
    # Federation e2e: peers' bundles are refreshed within seconds, not at the 5-minute hint.
    env.setdefault("HALLMARK_FEDERATION_MAX_REFRESH_SECONDS", "2")
    env.setdefault("HALLMARK_FEDERATION_SWEEP_SECONDS", "2")
    # Metering e2e: beat rolls the Redis counters up within seconds, not once a minute.
    env.setdefault("HALLMARK_METERING_ROLLUP_SECONDS", "2")
    # One process of each kind, not two: a plane is five processes lighter on the suite's 2
    # cores. The tests of several agent-API processes on one port ask for them
    # (tests/issuance/test_agentapi_scaleout.py); test_process_counts.py checks the knobs.
    for knob in ("AGENT_API_PROCESSES", "WEB_WORKERS", "WORKER_CONCURRENCY"):
        env.setdefault(f"HALLMARK_{knob}", "1")
    return env


def _upstream_authorities_file(settings: Any) -> str:
    """Offer the session OpenBao's upstream PKI as "embedded", as an operator's file would."""
    path = Path(settings.DATA_DIR) / "e2e-upstream-authorities.json"
    document = {
        "embedded": {
            "address": settings.VAULT_ADDR,
            "mount": settings.EMBEDDED_UPSTREAM_MOUNT,
            "token": settings.VAULT_TOKEN,
            "trust_domains": ["*"],  # no list: offered to no tenant
        }
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
    return str(path)


# The session's one shared plane: tests/console/ asks for it through its own fixture too.
_SESSION_PLANE: list[ControlPlaneProcess] = []


def session_control_plane(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlaneProcess]:
    """The first fixture to ask starts the plane and stops it at the session's end."""
    if _SESSION_PLANE:
        yield _SESSION_PLANE[0]
        return
    plane = launch_control_plane(
        tmp_path_factory.mktemp("hallmark-up"),
        control_plane_env(),
        free_port(),
        free_port(),
        metrics_port=free_ports(4),
    )
    _SESSION_PLANE.append(plane)
    try:
        yield plane
    finally:
        _SESSION_PLANE.clear()
        stop_control_plane(plane)


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[ControlPlaneProcess]:
    yield from session_control_plane(tmp_path_factory)
