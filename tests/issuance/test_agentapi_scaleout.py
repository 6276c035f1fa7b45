"""Several agent-API processes on one port (SO_REUSEPORT): all serve, each restarts alone.

Real processes throughout: a dedicated `hallmark up` with HALLMARK_AGENT_API_PROCESSES=2 (its
REST API makes the tenants and join tokens), standalone `hallmark agent-api --reuse-port`
processes beside it, and agents of two tenants speaking mTLS gRPC to the shared port. Which
process served what is read from each process's own account: on SIGTERM it logs the calls
and connections it served, under its pid.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from cryptography import x509

from hallmark.bundle import load_pem_certificates
from hallmark.x509svid import make_csr, verify_x509_svid
from tests.e2e.conftest import (
    ControlPlaneProcess,
    control_plane_env,
    free_port,
    launch_control_plane,
    stop_control_plane,
    wait_for,
)
from tests.issuance.agentapi_harness import AgentApiClient, AgentIdentity

pytestmark = [pytest.mark.e2e]

REDIS_DB = 6  # one of its own: heartbeats and change events stay this plane's
AGENTS = 16  # connections spread by the kernel's hash: all on one process has odds 2**-31
SUMMARY = re.compile(r"agent API pid (\d+) stopping after (\d+) calls on (\d+) connections")


@pytest.fixture(scope="module")
def env(django_db_setup: None) -> dict[str, str]:
    environment = control_plane_env(redis_db=REDIS_DB)
    environment["HALLMARK_AGENT_API_PROCESSES"] = "2"
    return environment


@pytest.fixture(scope="module")
def plane(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlaneProcess]:
    running = launch_control_plane(
        tmp_path_factory.mktemp("scaleout-up"), env, free_port(), free_port()
    )
    try:
        yield running
    finally:
        stop_control_plane(running)


@pytest.fixture(scope="module")
def tenants(plane: ControlPlaneProcess) -> list[dict[str, Any]]:
    """Two tenants, each with one entry under the node alias its agents' join tokens name."""
    made = []
    for label in ("scale-a", "scale-b"):
        tenant = plane.signup(label)
        td = tenant["trust_domain"]
        answer = plane.call(
            tenant["token"],
            "POST",
            "entries",
            json={
                "spiffe_id": f"spiffe://{td}/workload",
                "parent_id": f"spiffe://{td}/node/scale",
                "selectors": ["unix:uid:1000"],
            },
        )
        assert answer.status_code == 201, answer.text
        made.append(tenant)
    return made


def _roots(plane: ControlPlaneProcess, tenant: dict[str, Any]) -> bytes:
    answer = plane.call(tenant["token"], "GET", "bundle", params={"format": "pem"})
    assert answer.status_code == 200, answer.text
    return answer.content


def _agent_mints(plane: ControlPlaneProcess, tenant: dict[str, Any], port: int) -> int:
    """An agent attests (own connection), then syncs and mints over mTLS; returns its calls."""
    td = tenant["trust_domain"]
    token = plane.call(
        tenant["token"],
        "POST",
        "join-tokens",
        json={"ttl": 600, "spiffe_id": f"spiffe://{td}/node/scale"},
    ).json()["token"]
    roots = _roots(plane, tenant)
    identity = AgentIdentity.fresh()
    anonymous = AgentApiClient(port, server_name=td, roots_pem=roots)
    try:
        anonymous.attest(td, token, identity)
    finally:
        anonymous.close()
    client = AgentApiClient(port, server_name=td, roots_pem=roots, identity=identity)
    try:
        entries = client.sync().entries
        minted = client.new_svids({entries[0].id: make_csr(identity.key)})
    finally:
        client.close()
    chain = [x509.load_der_x509_certificate(d) for d in minted.results[0].svid_chain]
    assert str(verify_x509_svid(chain, load_pem_certificates(roots))) == f"spiffe://{td}/workload"
    return 3


def _listening_pids(port: int) -> set[int]:
    """The processes holding a socket that listens on TCP `port`: the listening sockets'
    inodes from /proc/net/tcp{,6}, then which processes' descriptors name them (one pass over
    /proc; psutil's per-process net_connections re-read every socket table for each process,
    ~45 s of a suite run spent in this poll)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            listening = fields[3] == "0A"  # TCP_LISTEN
            if listening and int(fields[1].rpartition(":")[2], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    if not sockets:
        return set()
    return {
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and _holds_any(entry.name, sockets)
    }


def _holds_any(pid: str, sockets: set[str]) -> bool:
    """Whether process `pid` has a descriptor on one of `sockets` (False once it is gone); a
    descriptor closed while this looks is skipped, not taken for the whole process."""
    try:
        with os.scandir(f"/proc/{pid}/fd") as descriptors:
            paths = [fd.path for fd in descriptors]
    except OSError:  # gone, or not ours to read
        return False
    for path in paths:
        try:
            if os.readlink(path) in sockets:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


def _summaries(log: Path) -> dict[int, tuple[int, int]]:
    """pid → (calls, connections) of every process that logged its stop in `log`."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return {int(p): (int(c), int(n)) for p, c, n in SUMMARY.findall(text)}


def _agent_api(env: dict[str, str], port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "config.cli", "agent-api", "--listen", f"127.0.0.1:{port}", *extra],
        stdout=open(log, "ab"),  # noqa: SIM115 - the child keeps it
        stderr=subprocess.STDOUT,
        env={**env, "HALLMARK_DATA_DIR": str(log.parent)},
    )


def test_two_processes_on_one_port_both_serve_agents_of_two_tenants(
    plane: ControlPlaneProcess, tenants: list[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    # given two standalone agent-API processes sharing one port
    port = free_port()
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    servers = [_agent_api(env, port, log, "--reuse-port") for log in logs]
    try:
        wait_for(lambda: _listening_pids(port) == {s.pid for s in servers}, 60, "both to listen")

        # when 16 agents, half of each tenant, attest and mint, each on connections of its own
        calls = sum(_agent_mints(plane, tenants[i % 2], port) for i in range(AGENTS))

        # and both processes stop (each logs what it served)
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    finally:
        for server in servers:
            if server.poll() is None:
                server.kill()

    # then each served some of the calls, and together exactly the calls the agents made
    served = {**_summaries(logs[0]), **_summaries(logs[1])}
    assert set(served) == {s.pid for s in servers}, served
    assert all(calls_ > 0 and connections > 0 for calls_, connections in served.values()), served
    assert sum(calls_ for calls_, _ in served.values()) == calls


def test_a_process_without_reuse_port_cannot_take_a_shared_port(
    env: dict[str, str], tmp_path: Path
) -> None:
    # given an agent-API process listening with --reuse-port
    port = free_port()
    first = _agent_api(env, port, tmp_path / "first.log", "--reuse-port")
    try:
        wait_for(lambda: _listening_pids(port) == {first.pid}, 60, "it to listen")

        # when a second one starts on the same port without --reuse-port
        second = _agent_api(env, port, tmp_path / "second.log")

        # then it fails to bind instead of silently taking half of the connections
        assert second.wait(timeout=60) != 0
        assert "address already in use" in (tmp_path / "second.log").read_text().lower()
        assert _listening_pids(port) == {first.pid}
    finally:
        first.terminate()
        first.wait(timeout=30)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _children(plane: ControlPlaneProcess) -> dict[str, int]:
    """agent-api-N → pid of its live, listening process (each logs to logs/agent-api-N.log)."""
    live = {
        child.pid
        for child in psutil.Process(plane.process.pid).children()
        if _alive(child) and "agent-api" in child.cmdline()
    }
    names = {}
    for log in (plane.data_dir / "logs").glob("agent-api-*.log"):
        listening = re.findall(r"agent API pid (\d+) listening", log.read_text(errors="replace"))
        pids = [int(p) for p in listening if int(p) in live]
        if pids:
            names[log.stem] = pids[-1]
    return names


def test_up_restarts_a_killed_agent_api_process_alone_and_the_port_serves_throughout(
    plane: ControlPlaneProcess, tenants: list[dict[str, Any]]
) -> None:
    # given `hallmark up` with two agent-API processes on its gRPC port
    port = int(plane.grpc.rpartition(":")[2])
    wait_for(lambda: len(_children(plane)) == 2, 60, "two agent-API children")
    before = _children(plane)
    assert _listening_pids(port) == set(before.values())

    # when agent-api-1 is killed
    killed = psutil.Process(before["agent-api-1"])
    killed.send_signal(signal.SIGKILL)
    wait_for(lambda: not _alive(killed), 30, "the killed process to be gone")

    # then the port serves agents all the same (the kernel routes to the live listener)
    assert _agent_mints(plane, tenants[0], port) == 3
    # and `hallmark up` restarts agent-api-1 alone; agent-api-2 keeps running
    wait_for(
        lambda: (
            "agent-api-1 exited with -9; restarting it"
            in (plane.data_dir / "up.log").read_text(errors="replace")
        ),
        30,
        "hallmark up to restart agent-api-1",
    )
    wait_for(
        lambda: _children(plane).get("agent-api-1", before["agent-api-1"]) != before["agent-api-1"],
        60,
        "a new agent-api-1 to listen",
    )
    after = _children(plane)
    assert after["agent-api-2"] == before["agent-api-2"]
    wait_for(lambda: _listening_pids(port) == set(after.values()), 30, "both to listen")
    assert requests.get(f"{plane.http}/healthz", timeout=10).status_code == 200

    # and the new process serves agents of both tenants: its own account when it stops says so
    calls = sum(_agent_mints(plane, tenants[i % 2], port) for i in range(AGENTS))
    psutil.Process(after["agent-api-1"]).send_signal(signal.SIGTERM)
    log = plane.data_dir / "logs" / "agent-api-1.log"
    wait_for(lambda: after["agent-api-1"] in _summaries(log), 30, "its account of what it served")
    served_calls, connections = _summaries(log)[after["agent-api-1"]]
    assert 0 < served_calls <= calls
    assert connections > 0


def _entry(plane: ControlPlaneProcess, tenant: dict[str, Any], spiffe_id: str, parent: str) -> str:
    """An entry for this test process's uid under the agent's alias; returns its SPIFFE ID."""
    answer = plane.call(
        tenant["token"],
        "POST",
        "entries",
        json={
            "spiffe_id": spiffe_id,
            "parent_id": parent,
            "selectors": [f"unix:uid:{os.getuid()}"],
        },
    )
    assert answer.status_code == 201, answer.text
    return spiffe_id


class WorkloadSampler(threading.Thread):
    """A workload asking the agent's Workload API for its X.509-SVID every 50 ms."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.answers: list[tuple[float, set[str], dt.datetime]] = []  # when, SPIFFE IDs, expiry
        self.failures: list[tuple[float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from spiffe import WorkloadApiClient

        with WorkloadApiClient(socket_path=f"unix:{self.socket_path}") as client:
            while not self.stop.wait(0.05):
                asked = time.time()
                try:
                    context = client.fetch_x509_context()
                except Exception as exc:  # noqa: BLE001 - every failure is a finding
                    self.failures.append((asked, repr(exc)))
                    continue
                svids = context.x509_svids
                ids = {str(svid.spiffe_id) for svid in svids}
                expiry = min(svid.leaf.not_valid_after_utc for svid in svids) if svids else None
                if expiry is None or expiry <= dt.datetime.now(tz=dt.UTC):
                    self.failures.append((asked, f"no valid SVID: {ids} until {expiry}"))
                    continue
                self.answers.append((asked, ids, expiry))


def _established(pid: int, port: int) -> int:
    """Connections a server process holds on `port` (from agents) now."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    )


def test_a_drained_process_hands_its_agent_to_the_other_without_an_svid_gap(
    plane: ControlPlaneProcess, tenants: list[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    # given an agent (hallmark-agent) whose workload holds an SVID, with its watch stream on
    # agent-API process 1, and process 2 then listening on the same port
    tenant, td = tenants[0], tenants[0]["trust_domain"]
    alias = f"spiffe://{td}/node/failover"
    first_entry = _entry(plane, tenant, f"spiffe://{td}/failover/one", alias)
    port = free_port()
    first = _agent_api(env, port, tmp_path / "first.log", "--reuse-port")
    second = None
    agent = None
    sampler = None
    try:
        wait_for(lambda: _listening_pids(port) == {first.pid}, 60, "process 1 to listen")
        token = plane.call(
            tenant["token"], "POST", "join-tokens", json={"ttl": 600, "spiffe_id": alias}
        ).json()["token"]
        (tmp_path / "bundle.json").write_bytes(plane.call(tenant["token"], "GET", "bundle").content)
        to_port = dataclasses.replace(plane, grpc=f"127.0.0.1:{port}", agents=[])
        agent, socket_path = to_port.start_agent(
            td, token, tmp_path / "agent", "--trust-bundle", str(tmp_path / "bundle.json")
        )
        sampler = WorkloadSampler(socket_path)
        wait_for(socket_path.exists, 60, "the agent's Workload API socket")
        sampler.start()
        wait_for(lambda: sampler.answers, 60, "the workload's first SVID")
        second = _agent_api(env, port, tmp_path / "second.log", "--reuse-port")
        wait_for(lambda: _listening_pids(port) == {first.pid, second.pid}, 60, "both to listen")
        assert _established(first.pid, port) >= 1 and _established(second.pid, port) == 0

        # when process 1 gets SIGTERM (a rolling restart) and drains
        first.send_signal(signal.SIGTERM)

        # then the agent reconnects to process 2, and process 1 exits 0
        wait_for(lambda: _established(second.pid, port) >= 1, 60, "the agent on process 2")
        assert first.wait(timeout=60) == 0
        # and its watch stream lives there: a new entry reaches the workload by push
        _entry(plane, tenant, f"spiffe://{td}/failover/two", alias)
        wanted = {first_entry, f"spiffe://{td}/failover/two"}
        wait_for(lambda: sampler.answers[-1][1] == wanted, 60, "the new SVID on process 2")
    finally:
        if sampler is not None:
            sampler.stop.set()
            sampler.join(timeout=10)
        for process in (agent, first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)

    # and the workload was answered with a valid SVID throughout, never an error or nothing
    assert sampler.failures == [], sampler.failures[:5]
    switch = [when for when, ids, _ in sampler.answers if ids == wanted]
    assert len(sampler.answers) > len(switch) > 0
    times = [when for when, _, _ in sampler.answers]
    longest = max(b - a for a, b in zip(times, times[1:], strict=False))
    print(f"\nworkload answers: {len(times)}, longest wait between two: {longest * 1000:.0f} ms")
