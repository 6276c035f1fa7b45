"""Fixtures: the agent's Workload API server in a subprocess over a static state.

The server runs in its own process, as a real agent does (py-spiffe and hallmark's generated
Workload API code may share a process now, but the server should not share the client's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("workload_server_runner.py")
PYTHON = sys.executable

ENTRIES = [
    {
        "id": "e-root",
        "spiffe_id": "spiffe://example.org/root-workload",
        "selectors": ["unix:uid:0"],
        "hint": "internal",
        "federates_with": ["partner.org"],
    },
    {
        "id": "e-nobody",
        "spiffe_id": "spiffe://example.org/nobody-workload",
        "selectors": ["unix:uid:65534", "unix:user:nobody"],
    },
    {
        "id": "e-never",
        "spiffe_id": "spiffe://example.org/never",
        "selectors": ["unix:uid:0", "unix:user:no-such-user"],
    },
    {
        "id": "e-multi-a",
        "spiffe_id": "spiffe://example.org/multi-a",
        "selectors": ["unix:uid:1001"],
        "hint": "a",
    },
    {
        "id": "e-multi-b",
        "spiffe_id": "spiffe://example.org/multi-b",
        "selectors": ["unix:uid:1001"],
        "hint": "b",
    },
    {
        "id": "e-pending",
        "spiffe_id": "spiffe://example.org/pending",
        "selectors": ["unix:uid:4242"],
    },
]


def child_env() -> dict[str, str]:
    """Environment for helper processes (possibly running as another uid)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SPIFFE_ENDPOINT_SOCKET",)}
    env["PYTHONPATH"] = str(REPO)
    env["HOME"] = "/tmp"  # noqa: S108
    return env


@dataclass
class WorkloadServer:
    """A running Workload API server process and how to reach and steer it."""

    process: subprocess.Popen[str]
    socket_path: str
    data_dir: str

    @property
    def endpoint(self) -> str:
        return "unix:" + self.socket_path

    @property
    def ca_pem(self) -> bytes:
        return Path(self.data_dir, "ca.pem").read_bytes()

    @property
    def partner_ca_pem(self) -> bytes:
        return Path(self.data_dir, "partner_ca.pem").read_bytes()

    def command(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()


@pytest.fixture(scope="module")
def workload_server() -> Iterator[WorkloadServer]:
    # The socket's directory must be reachable by workloads running as other uids.
    public = tempfile.mkdtemp(prefix="hallmark-wl-")
    os.chmod(public, 0o755)  # noqa: S103
    data_dir = tempfile.mkdtemp(prefix="hallmark-agent-data-")
    socket_path = os.path.join(public, "api.sock")
    process = subprocess.Popen(
        [
            PYTHON,
            str(RUNNER),
            "--socket",
            socket_path,
            "--data-dir",
            data_dir,
            "--entries",
            json.dumps(ENTRIES),
            "--pending",
            "e-pending",
            "--svid-wait",
            "2",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=REPO,
    )
    assert process.stdout is not None
    ready = process.stdout.readline().strip()
    assert ready == "READY", f"runner did not start: {ready!r}"
    try:
        yield WorkloadServer(process, socket_path, data_dir)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(public, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


# The interpreter lives under /root (0700), so a child cannot exec it as another uid; instead
# it starts as root, imports what it needs, then drops to the uid before connecting, so the
# kernel reports that uid for the connection (and /proc shows it).
_DROP_PRIVILEGES = """
import json, os, sys, grpc
try:
    import spiffe
except ImportError:
    pass
uid = int(sys.argv.pop(1))
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
"""


def run_as(
    uid: int, script: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet as `uid` (dropping root privileges before it runs)."""
    return subprocess.run(
        [PYTHON, "-c", _DROP_PRIVILEGES + script, str(uid), *args],
        env=child_env(),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def popen_as(uid: int, script: str, *args: str) -> subprocess.Popen[str]:
    """Start a Python snippet as `uid`; its stdout is a text pipe."""
    return subprocess.Popen(
        [PYTHON, "-c", _DROP_PRIVILEGES + script, str(uid), *args],
        env=child_env(),
        cwd="/",
        stdout=subprocess.PIPE,
        text=True,
    )
