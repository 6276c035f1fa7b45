"""The Workload API socket's directory: refused when another local user could control it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.config import DEFAULT_SOCKET, AgentConfig, default_socket
from tests.agent.conftest import PYTHON, REPO, child_env


def _run_agent(socket_path: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    # The socket is prepared before the agent talks to any server: port 1 is never reached.
    return subprocess.run(
        [
            PYTHON,
            "-m",
            "agent.cli",
            "run",
            "--server",
            "127.0.0.1:1",
            "--trust-domain",
            "example.org",
            "--insecure-bootstrap",
            "--socket",
            str(socket_path),
            "--data-dir",
            str(data_dir),
        ],
        env={**child_env(), "HALLMARK_JOIN_TOKEN": "unused"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def base(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)  # noqa: S103 (a public socket's parent)
    return tmp_path


def test_socket_directory_created_by_another_user_is_refused(base: Path) -> None:
    # given the socket directory already exists, made by another user (uid 65534)
    public = base / "public"
    public.mkdir(mode=0o755)
    os.chown(public, 65534, 65534)

    # when the agent starts with its socket there
    result = _run_agent(public / "api.sock", base / "data")

    # then it refuses, says why and what to do, and serves nothing there
    assert result.returncode == 1, result.stderr
    assert "unsafe_socket_dir" in result.stderr
    assert "owned by uid 65534" in result.stderr and "remove it" in result.stderr
    assert not (public / "api.sock").exists()


def test_socket_directory_writable_by_others_is_refused(base: Path) -> None:
    public = base / "public"
    public.mkdir()
    os.chmod(public, 0o777)  # noqa: S103

    result = _run_agent(public / "api.sock", base / "data")

    assert result.returncode == 1
    assert "unsafe_socket_dir" in result.stderr and f"chmod go-w {public}" in result.stderr
    assert not (public / "api.sock").exists()


def test_socket_directory_that_is_a_symlink_is_refused(base: Path) -> None:
    # given the socket directory is a link to a directory the agent owns
    real = base / "real"
    real.mkdir(mode=0o755)
    (base / "public").symlink_to(real)

    result = _run_agent(base / "public" / "api.sock", base / "data")

    assert result.returncode == 1
    assert "unsafe_socket_dir" in result.stderr and "symlink" in result.stderr
    assert not (real / "api.sock").exists()


def test_directory_above_the_socket_writable_by_others_is_refused(base: Path) -> None:
    # given the socket directory is the agent's but sits in a directory anyone may write
    # (no sticky bit), where another user could rename it away and put their own in place
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # noqa: S103
    public = shared / "public"
    public.mkdir(mode=0o755)

    result = _run_agent(public / "api.sock", base / "data")

    assert result.returncode == 1
    assert "unsafe_socket_dir" in result.stderr and "sticky" in result.stderr


def test_default_socket_is_under_run_for_root_and_under_the_data_dir_otherwise(
    tmp_path: Path,
) -> None:
    assert default_socket(str(tmp_path), euid=0) == "/run/hallmark-agent/public/api.sock"
    assert DEFAULT_SOCKET == "/run/hallmark-agent/public/api.sock"
    assert default_socket(str(tmp_path), euid=1000) == str(tmp_path / "public" / "api.sock")


def test_config_without_socket_uses_the_default_for_this_user(tmp_path: Path) -> None:
    config = AgentConfig.load(
        {
            "server": "127.0.0.1:8081",
            "trust_domain": "example.org",
            "insecure_bootstrap": True,
            "data_dir": str(tmp_path),
        },
        environ={},
    )

    assert config.socket == default_socket(str(tmp_path))
