"""Where the CLI's token comes from, against a real `hallmark up`: env vars, else the 0600 file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from config.spirecli import credentials
from tests.e2e.cli.conftest import CliTenant, Hallmark
from tests.e2e.conftest import ControlPlaneProcess

pytestmark = [pytest.mark.e2e]


def test_a_stored_login_is_used_when_no_token_is_in_the_environment(
    hallmark: Hallmark, cli_a: CliTenant, control_plane: ControlPlaneProcess, config_home: Path
) -> None:
    # given credentials stored as `hallmark login` stores them
    path = credentials.store({"api_url": control_plane.http, "token": cli_a.token})
    # then the file is 0600 in a 0700 directory
    assert path == config_home / "hallmark" / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # and commands use it when HALLMARK_API_TOKEN is unset
    run = hallmark(None, "entry", "count", "-output", "json")
    assert run.code == 0, run.err
    assert isinstance(run.json()["count"], int)


def test_a_credentials_file_others_can_read_is_refused(
    hallmark: Hallmark, cli_a: CliTenant, control_plane: ControlPlaneProcess, config_home: Path
) -> None:
    path = credentials.store({"api_url": control_plane.http, "token": cli_a.token})
    path.chmod(0o644)
    run = hallmark(None, "entry", "count")
    assert run.code == 2 and run.out == ""
    assert f"run `chmod 600 {path}`" in run.err


def test_the_environment_token_wins_over_the_stored_one(
    hallmark: Hallmark, cli_a: CliTenant, control_plane: ControlPlaneProcess, config_home: Path
) -> None:
    # given a stored token the API does not know
    path = credentials.store({"api_url": control_plane.http, "token": "hm_not-a-real-token"})
    # then with HALLMARK_API_TOKEN set the stored one is not used
    assert hallmark(cli_a.token, "entry", "count").code == 0
    # and without it the API refuses the stored one: exit 1, its code, and what to do
    refused = hallmark(None, "entry", "count")
    assert refused.code == 1
    assert "invalid_token" in refused.err and "(HTTP 401)" in refused.err
    assert f"from {path}" in refused.err and "hallmark login" in refused.err


def test_no_token_at_all_exits_2_and_says_how_to_get_one(hallmark: Hallmark) -> None:
    run = hallmark(None, "agent", "list")
    assert run.code == 2 and run.out == ""
    assert "export HALLMARK_API_TOKEN=" in run.err and "hallmark login" in run.err
