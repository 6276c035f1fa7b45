"""`hallmark-registrar` as an operator starts it: help, and refusals before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "hallmark-registrar"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=60, env=env or {}, check=False
    )


def test_help_names_the_resources_and_the_flags() -> None:
    answer = run("--help")

    assert answer.returncode == 0
    for text in ("ClusterSPIFFEID", "--cluster-name", "--kubeconfig", "--parent-id-template"):
        assert text in answer.stdout


def test_it_refuses_to_start_without_a_server_a_token_or_kubernetes_credentials(
    tmp_path: Path,
) -> None:
    no_server = run("--cluster-name", "prod-eu")
    no_token = run("--cluster-name", "prod-eu", "--server", "https://hallmark.example.com")
    (tmp_path / "token").write_text("hm_registrar_token\n")
    not_in_cluster = run(
        "--cluster-name",
        "prod-eu",
        "--server",
        "https://hallmark.example.com",
        "--token-file",
        str(tmp_path / "token"),
    )

    assert (no_server.returncode, no_token.returncode, not_in_cluster.returncode) == (2, 2, 2)
    assert "--server" in no_server.stderr
    assert "--token-file" in no_token.stderr
    assert "KUBERNETES_SERVICE_HOST" in not_in_cluster.stderr


def test_the_registrar_runs_without_django() -> None:
    # it runs in the customer's cluster: plain Python and requests, the REST API only
    code = (
        "import sys, registrar.cli, registrar.controller; "
        "sys.exit(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('django', 'rest_framework', 'tenants', 'issuance', 'config')) or 0)"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert answer.returncode == 0, answer.stderr
