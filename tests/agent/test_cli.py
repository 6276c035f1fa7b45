"""`hallmark-agent api ...` and `healthcheck` against a real Workload API server."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hallmark.x509svid import verify_x509_svid
from tests.agent.conftest import PYTHON, REPO, WorkloadServer, child_env


def hallmark_agent(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "agent.cli", *args],
        env=env or child_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_fetch_x509_prints_the_svid_like_spire_agent(workload_server: WorkloadServer) -> None:
    # when the SVIDs are fetched through the socket flag
    result = hallmark_agent("api", "fetch", "x509", "--socket", workload_server.endpoint)

    # then the SPIFFE ID, validity and CA lines are printed
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Received 1 svid after ")
    assert "SPIFFE ID:\t\tspiffe://example.org/root-workload\n" in result.stdout
    assert "SVID Valid After:\t" in result.stdout
    assert "SVID Valid Until:\t" in result.stdout
    assert "CA #1 Valid Until:\t" in result.stdout


def test_fetch_x509_write_stores_svid_key_and_bundle(
    workload_server: WorkloadServer, tmp_path: Path
) -> None:
    # given the socket named by SPIFFE_ENDPOINT_SOCKET
    env = {**child_env(), "SPIFFE_ENDPOINT_SOCKET": workload_server.endpoint}

    # when the SVIDs are fetched and written
    result = hallmark_agent("api", "fetch", "x509", "--write", str(tmp_path), env=env)

    # then svid.0.pem verifies against bundle.0.pem and svid.0.key is its private key, 0600
    assert result.returncode == 0, result.stderr
    assert f"Writing SVID #0 to file {tmp_path / 'svid.0.pem'}." in result.stdout
    chain = x509.load_pem_x509_certificates((tmp_path / "svid.0.pem").read_bytes())
    bundle = x509.load_pem_x509_certificates((tmp_path / "bundle.0.pem").read_bytes())
    assert str(verify_x509_svid(chain, bundle)) == "spiffe://example.org/root-workload"
    key = serialization.load_pem_private_key((tmp_path / "svid.0.key").read_bytes(), None)
    assert key.public_key() == chain[0].public_key()
    assert stat.S_IMODE(os.stat(tmp_path / "svid.0.key").st_mode) == 0o600


def test_healthcheck_succeeds_when_the_workload_api_answers(
    workload_server: WorkloadServer,
) -> None:
    result = hallmark_agent("healthcheck", "--socket", workload_server.socket_path)

    assert result.returncode == 0, result.stderr
    assert "Agent is healthy." in result.stdout


def test_healthcheck_fails_when_nothing_listens(tmp_path: Path) -> None:
    result = hallmark_agent(
        "healthcheck", "--socket", str(tmp_path / "missing.sock"), "--timeout", "1"
    )

    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_fetch_x509_with_a_relative_socket_is_a_clear_error() -> None:
    result = hallmark_agent("api", "fetch", "x509", "--socket", "relative.sock")

    assert result.returncode == 1
    assert "not a Unix socket address" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("run",),
        ("api",),
        ("api", "fetch"),
        ("api", "fetch", "x509"),
        ("api", "fetch", "jwt"),
        ("api", "validate", "jwt"),
        ("api", "watch"),
        ("healthcheck",),
    ],
)
def test_every_command_has_help(args: tuple[str, ...]) -> None:
    result = hallmark_agent(*args, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: hallmark-agent")


def test_fetch_jwt_prints_the_token_and_the_jwt_bundles(workload_server: WorkloadServer) -> None:
    # when a JWT-SVID is fetched for two audiences
    result = hallmark_agent(
        "api",
        "fetch",
        "jwt",
        "--audience",
        "reports",
        "--audience",
        "billing",
        "--socket",
        workload_server.endpoint,
    )

    # then the token and each JWT bundle are printed like spire-agent does
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "token(spiffe://example.org/root-workload):"
    assert lines[1].startswith("\teyJ") and lines[1].count(".") == 2
    assert "bundle(spiffe://example.org):" in lines
    assert "bundle(spiffe://partner.org):" in lines


def test_fetch_jwt_for_an_identity_not_granted_fails(workload_server: WorkloadServer) -> None:
    result = hallmark_agent(
        "api",
        "fetch",
        "jwt",
        "--audience",
        "reports",
        "--spiffe-id",
        "spiffe://example.org/nobody-workload",
        "--socket",
        workload_server.endpoint,
    )

    assert result.returncode == 1
    assert "PERMISSION_DENIED" in result.stderr


def test_validate_jwt_prints_the_spiffe_id_and_claims(workload_server: WorkloadServer) -> None:
    token = workload_server.command(
        "mint-jwt example.org spiffe://example.org/root-workload reports 300"
    )

    result = hallmark_agent(
        "api",
        "validate",
        "jwt",
        "--audience",
        "reports",
        "--svid",
        token,
        "--socket",
        workload_server.endpoint,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SVID is valid.\n")
    assert "SPIFFE ID : spiffe://example.org/root-workload\n" in result.stdout
    assert '"sub":"spiffe://example.org/root-workload"' in result.stdout


def test_validate_jwt_exits_1_for_an_invalid_token(workload_server: WorkloadServer) -> None:
    token = workload_server.command(
        "mint-jwt example.org spiffe://example.org/root-workload reports 300"
    )

    result = hallmark_agent(
        "api",
        "validate",
        "jwt",
        "--audience",
        "billing",
        "--svid",
        token,
        "--socket",
        workload_server.endpoint,
    )

    assert result.returncode == 1
    assert "SVID is not valid: INVALID_ARGUMENT: jwt_audience_mismatch" in result.stderr


def test_watch_prints_each_stream_update(workload_server: WorkloadServer) -> None:
    # given `api watch` that has printed an update with the current SVID's serial
    watch = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "agent.cli",
            "api",
            "watch",
            "--count",
            "20",
            "--socket",
            workload_server.endpoint,
        ],
        env=child_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert watch.stdout is not None
        serials = _read_serials(watch.stdout, lines, want=1)
        assert " update #1: 1 svid(s), federated bundles: spiffe://partner.org" in lines[0]

        # when the SVIDs rotate
        assert workload_server.command("rotate") == "ROTATED"

        # then a later update carries a new serial (the server may also repeat a message)
        while len(set(serials)) < 2:
            serials += _read_serials(watch.stdout, lines, want=1)
    finally:
        watch.kill()
        watch.communicate(timeout=30)
    assert any(" update #2: " in line for line in lines), "".join(lines)
    assert len(set(serials)) == 2, "".join(lines)


def _read_serials(stream, lines: list[str], want: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Read watch output until `want` more Serial lines arrived (a bounded number of lines)."""
    found: list[str] = []
    for _ in range(200):
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Serial:"):
            found.append(line.split()[-1])
            if len(found) == want:
                return found
    raise AssertionError("watch output ended early:\n" + "".join(lines))
