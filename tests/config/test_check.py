"""`hallmark check`: a preflight that says in plain words which configured server is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import run_hallmark

BIN = Path(sys.executable).parent


def hallmark_check(**overrides: str) -> subprocess.CompletedProcess[str]:
    """`hallmark check` against the session's real servers, with some variables changed."""
    return run_hallmark("check", timeout=60, **overrides)


def test_a_working_configuration_passes_every_check() -> None:
    result = hallmark_check(
        HALLMARK_DEFAULT_KEY_MANAGER="pkcs11",
        SOFTHSM2_CONF=os.environ.get("SOFTHSM2_CONF", "/etc/softhsm/softhsm2.conf"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for part in ("PostgreSQL", "Redis", "Vault", "PKCS#11"):
        assert f"ok   {part}:" in result.stdout
    assert "all 4 checks passed" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "part", "advice"),
    [
        (
            {"HALLMARK_DATABASE_URL": "postgresql://hallmark@127.0.0.1:9/hallmark"},
            "PostgreSQL",
            "check HALLMARK_DATABASE_URL",
        ),
        ({"HALLMARK_REDIS_URL": "redis://127.0.0.1:9/0"}, "Redis", "check HALLMARK_REDIS_URL"),
        ({"HALLMARK_VAULT_ADDR": "http://127.0.0.1:9"}, "Vault", "check HALLMARK_VAULT_ADDR"),
        ({"HALLMARK_VAULT_TOKEN": "s.not-a-token"}, "Vault", "the token is not valid"),
        (
            {"HALLMARK_VAULT_TRANSIT_MOUNT": "no-such-transit"},
            "Vault",
            "no secrets engine at no-such-transit/",
        ),
        (
            {"HALLMARK_DEFAULT_KEY_MANAGER": "pkcs11", "HALLMARK_PKCS11_MODULE": "/nope/p11.so"},
            "PKCS#11",
            "module /nope/p11.so not found",
        ),
    ],
    ids=["database", "redis", "vault-address", "vault-token", "transit-mount", "pkcs11-module"],
)
def test_each_broken_part_is_named_with_what_to_do_and_the_exit_is_non_zero(
    overrides: dict[str, str], part: str, advice: str
) -> None:
    result = hallmark_check(**overrides)

    assert result.returncode == 1, result.stdout + result.stderr
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and failing[0].startswith(f"FAIL {part}:"), result.stdout
    assert advice in failing[0]
    assert "1 of" in result.stdout and "checks failed" in result.stdout


def test_a_missing_server_address_is_reported_not_raised() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HALLMARK_REDIS_URL",)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [str(BIN / "hallmark"), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "FAIL configuration: HALLMARK_REDIS_URL is required" in result.stdout
