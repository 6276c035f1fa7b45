"""Several agent-API processes on one port (SO_REUSEPORT): all serve, each restarts alone.

Real processes throughout: a dedicated `hallmark up` with HALLMARK_AGENT_API_PROCESSES=2 (its
REST API makes the tenants and join tokens), standalone `hallmark agent-api --reuse-port`
processes beside it, and agents of two tenants speaking mTLS gRPC to the shared port. Which
process served what is read from each process's own account: on SIGTERM it logs the calls
and connections it served, under its pid.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
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
    pids = set()
    for process in psutil.process_iter():
        try:
            sockets = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets):
            pids.add(process.pid)
    return pids


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
