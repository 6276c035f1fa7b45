"""A real agent attests to a real control plane with its join token out of the process list."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from spiffe import WorkloadApiClient

from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def test_agent_attests_with_a_join_token_file_that_no_cmdline_shows(
    control_plane, tmp_path: Path
) -> None:
    # given a workload entry and a join token written to a 0600 file
    tenant = control_plane.signup("tokfile")
    td, api_token = tenant["trust_domain"], tenant["token"]
    alias = f"spiffe://{td}/node/tokfile"
    workload = f"spiffe://{td}/tokfile/app"
    answer = control_plane.call(
        api_token,
        "POST",
        "entries",
        json={"spiffe_id": workload, "parent_id": alias, "selectors": [f"unix:uid:{os.getuid()}"]},
    )
    assert answer.status_code == 201, answer.text
    join = control_plane.call(api_token, "POST", "join-tokens", json={"spiffe_id": alias}).json()
    token_file = tmp_path / "join-token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(join["token"] + "\n")

    # when the agent is started with --join-token-file
    agent, socket_path = control_plane.start_agent(
        td,
        None,
        tmp_path / "agent",
        "--join-token-file",
        str(token_file),
        "--trust-bundle-url",
        tenant["bundle_url"],
    )

    # then it attests and serves the workload's SVID
    wait_for(socket_path.exists, 60, "the Workload API socket")
    with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
        svid = wait_for(lambda: _svid(client), 60, "the workload's SVID")
    assert str(svid.spiffe_id) == workload
    # and the token was never in its command line, where every local user can read it
    cmdline = Path(f"/proc/{agent.pid}/cmdline").read_bytes()
    assert join["token"].encode() not in cmdline
    assert b"--join-token-file" in cmdline


def _svid(client: WorkloadApiClient):  # type: ignore[no-untyped-def]
    try:
        return client.fetch_x509_svid()
    except Exception:
        return None
