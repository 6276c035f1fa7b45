"""`hallmark-agent run` as a real process: attest, sync, serve py-spiffe on the socket."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from spiffe import WorkloadApiClient

from hallmark.x509svid import verify_x509_svid
from tests.agent.agent_api_standin import AgentApiStandin, StandinEntry
from tests.agent.conftest import PYTHON, REPO, child_env


@pytest.fixture
def standin() -> Iterator[AgentApiStandin]:
    """The agent API stand-in on its own event loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = AgentApiStandin()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def test_agent_process_serves_an_svid_to_py_spiffe(
    standin: AgentApiStandin, tmp_path: Path
) -> None:
    # given an entry for uid 0 and an agent started with a join token and the bundle file
    standin.servicer.put_entry(StandinEntry("e1", "spiffe://example.org/web", ["unix:uid:0"]))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(standin.bundle_pem())
    public = tempfile.mkdtemp(prefix="hallmark-agent-sock-")
    socket_path = os.path.join(public, "api.sock")
    agent = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "agent.cli",
            "run",
            "--server",
            f"127.0.0.1:{standin.port}",
            "--trust-domain",
            "example.org",
            "--join-token",
            "good-token",
            "--socket",
            socket_path,
            "--data-dir",
            str(tmp_path / "data"),
            "--trust-bundle",
            str(bundle),
        ],
        env=child_env(),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(socket_path) and time.monotonic() < deadline:
            assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
            time.sleep(0.05)

        # when a workload fetches its X.509 context through py-spiffe
        with WorkloadApiClient(socket_path="unix:" + socket_path) as client:
            context = client.fetch_x509_context(timeout=30)

        # then it receives the registered SVID, which verifies against the tenant's CA
        svid = context.default_svid
        assert str(svid.spiffe_id) == "spiffe://example.org/web"
        assert str(verify_x509_svid(svid.cert_chain, [standin.authority.ca])) == str(svid.spiffe_id)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=20)
        shutil.rmtree(public, ignore_errors=True)

    # and the agent stops cleanly on SIGTERM, having logged its progress
    assert agent.returncode == 0, stderr
    assert "attested as spiffe://example.org/spire/agent/join_token/token-1" in stderr
    assert "Workload API listening" in stderr
