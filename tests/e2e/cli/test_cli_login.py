"""`hallmark login` / `hallmark logout` against a real `hallmark up`.

They call POST /api/v1/auth/login and /logout (DESIGN "People"), which the `people` work
builds: these tests pass once it is merged.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.e2e.cli.conftest import PASSWORD, CliTenant, Hallmark
from tests.e2e.conftest import ControlPlaneProcess

pytestmark = [pytest.mark.e2e]


def test_login_stores_a_0600_session_token_the_commands_use_and_logout_revokes_it(
    hallmark: Hallmark,
    cli_a: CliTenant,
    control_plane: ControlPlaneProcess,
    config_home: Path,
    tmp_path: Path,
) -> None:
    # given the signup's email and password, the password in a file
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    # when the user logs in
    logged_in = hallmark(
        None, "login", "--api-url", control_plane.http, "--email", cli_a.email,
        "--password-file", str(password_file),
    )  # fmt: skip
    # then a session token is stored 0600 in a 0700 directory, and never printed
    assert logged_in.code == 0, logged_in.err
    path = config_home / "hallmark" / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    assert stored["api_url"] == control_plane.http and stored["email"] == cli_a.email
    assert stored["token"] and stored["token"] not in logged_in.out + logged_in.err
    assert stored["token"] != cli_a.token
    # and the commands use it, without HALLMARK_API_TOKEN
    assert hallmark(None, "entry", "count").code == 0
    # when the user logs out
    logged_out = hallmark(None, "logout")
    # then the file is gone and the token is revoked on the server
    assert logged_out.code == 0 and not path.exists()
    refused = hallmark(stored["token"], "entry", "count", "-output", "json")
    assert refused.code == 1 and refused.error()["code"] == "invalid_token"


def test_login_reads_the_password_from_stdin_and_names_the_tenant(
    hallmark: Hallmark, cli_a: CliTenant, control_plane: ControlPlaneProcess, config_home: Path
) -> None:
    logged_in = hallmark(
        None, "login", "-email", cli_a.email, "-tenant", cli_a.trust_domain, "-output", "json",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert logged_in.code == 0, logged_in.err
    assert "token" not in logged_in.json()
    assert (config_home / "hallmark" / "credentials").exists()
    assert hallmark(None, "logout").code == 0


def test_a_wrong_password_exits_1_with_invalid_credentials_and_stores_nothing(
    hallmark: Hallmark, cli_a: CliTenant, config_home: Path
) -> None:
    refused = hallmark(None, "login", "--email", cli_a.email, stdin="not the password\n")
    assert refused.code == 1
    assert "invalid_credentials" in refused.err and "(HTTP 401)" in refused.err
    assert not (config_home / "hallmark" / "credentials").exists()


def test_login_without_an_email_on_a_pipe_is_a_usage_error(hallmark: Hallmark) -> None:
    run = hallmark(None, "login", stdin=PASSWORD + "\n")
    assert run.code == 2 and "--email is required" in run.err
