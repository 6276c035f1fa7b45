"""Agents that survive: a restart without a join token, and a control plane that goes away."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from spiffe import WorkloadApiClient

from tests.e2e.conftest import (
    ControlPlaneProcess,
    control_plane_env,
    free_port,
    launch_control_plane,
    stop_control_plane,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
OUTAGE_GROUP = "tests/e2e/test_agent_survival.py::outage"


def _setup(plane: ControlPlaneProcess, label: str) -> tuple[dict, str, str]:
    tenant = plane.signup(label)
    alias = f"spiffe://{tenant['trust_domain']}/node/{label}"
    workload = f"spiffe://{tenant['trust_domain']}/{label}/workload"
    plane.call(
        tenant["token"],
        "POST",
        "entries",
        json={"spiffe_id": workload, "parent_id": alias, "selectors": [f"unix:uid:{os.getuid()}"]},
    )
    join = plane.call(tenant["token"], "POST", "join-tokens", json={"spiffe_id": alias}).json()
    return tenant, join["token"], alias


def _svid_ids(socket_path: Path) -> set[str]:
    with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
        return {str(s.spiffe_id) for s in client.fetch_x509_context().x509_svids}


def _serials(socket_path: Path) -> set[int]:
    with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
        return {s.leaf.serial_number for s in client.fetch_x509_context().x509_svids}


def _wait_for_svid(socket_path: Path, spiffe_id: str, timeout: float) -> None:
    def present() -> bool:
        try:
            return socket_path.exists() and spiffe_id in _svid_ids(socket_path)
        except Exception:
            return False

    wait_for(present, timeout, f"{spiffe_id} from the agent")


def test_a_restarted_agent_resumes_without_a_join_token(control_plane, tmp_path) -> None:
    tenant, join, _ = _setup(control_plane, "restart")
    workload = f"spiffe://{tenant['trust_domain']}/restart/workload"
    work = tmp_path / "agent"
    agent, socket_path = control_plane.start_agent(
        tenant["trust_domain"], join, work, "--trust-bundle-url", tenant["bundle_url"]
    )
    _wait_for_svid(socket_path, workload, 60)

    agent.terminate()
    assert agent.wait(timeout=30) == 0
    # the join token is spent: the agent must come back on its saved SVID and key alone
    again, socket_path = control_plane.start_agent(
        tenant["trust_domain"], None, work, "--trust-bundle-url", tenant["bundle_url"]
    )
    _wait_for_svid(socket_path, workload, 60)

    assert again.poll() is None
    agents = control_plane.call(tenant["token"], "GET", "agents").json()
    assert len(agents) == 1  # the same agent, not a second attestation
    keys = list((work / "data").rglob("*.key"))
    assert keys and all(key.stat().st_mode & 0o077 == 0 for key in keys)  # 0600


# Planes of its own, not the shared one: a group of its own, so it runs beside the shared plane's.
@pytest.mark.xdist_group(OUTAGE_GROUP)
def test_workloads_keep_their_svids_while_the_control_plane_is_down(
    tmp_path, django_db_setup
) -> None:
    env, http_port, grpc_port = control_plane_env(redis_db=2), free_port(), free_port()
    plane = launch_control_plane(tmp_path, env, http_port, grpc_port)
    try:
        tenant, join, alias = _setup(plane, "outage")
        workload = f"spiffe://{tenant['trust_domain']}/outage/workload"
        _, socket_path = plane.start_agent(
            tenant["trust_domain"],
            join,
            tmp_path / "agent",
            "--trust-bundle-url",
            tenant["bundle_url"],
        )
        _wait_for_svid(socket_path, workload, 60)
        before = _serials(socket_path)

        stop_control_plane(plane, agents=False)
        # the control plane is gone; the agent still serves what it holds
        assert _svid_ids(socket_path) == {workload}
        assert _serials(socket_path) == before

        restarted = launch_control_plane(tmp_path, env, http_port, grpc_port)
        restarted.agents = plane.agents
        plane = restarted
        added = f"spiffe://{tenant['trust_domain']}/outage/added-after"
        answer = plane.call(
            tenant["token"],
            "POST",
            "entries",
            json={"spiffe_id": added, "parent_id": alias, "selectors": [f"unix:uid:{os.getuid()}"]},
        )
        assert answer.status_code == 201
        # the agent reconnects (backoff ≤ 30 s) and resyncs; nothing was lost meanwhile
        _wait_for_svid(socket_path, added, 90)
        assert workload in _svid_ids(socket_path)
    finally:
        stop_control_plane(plane)
