"""The SPIRE-style CLI's own rules, with no control plane: help, exit codes, where tokens go.

Servers here are small real HTTP servers on 127.0.0.1 standing in for "some other host": they
record what reached them, so a test can prove a token was never sent there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from config.cli import main
from config.spirecli import credentials
from config.spirecli.main import parser

TOKEN = "hm_secret-token-for-tests"


class Recorder(ThreadingHTTPServer):
    """An HTTP server that records each request's path and Authorization header."""

    def __init__(self, answer: tuple[int, dict[str, str], bytes]) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.answer = answer
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[list[Recorder]]:
    servers: list[Recorder] = []
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _start(servers: list[Recorder], answer: tuple[int, dict[str, str], bytes]) -> Recorder:
    server = Recorder(answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return server


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("HALLMARK_API_TOKEN", raising=False)
    monkeypatch.delenv("HALLMARK_API_URL", raising=False)
    return tmp_path / "config" / "hallmark" / "credentials"


def _leaves(command: argparse.ArgumentParser, words: list[str]) -> Iterator[list[str]]:
    subparsers = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield words
        return
    for name, child in subparsers[0].choices.items():
        yield from _leaves(child, [*words, name])


COMMANDS = list(_leaves(parser(), []))


def test_every_spire_command_is_there() -> None:
    names = {" ".join(words) for words in COMMANDS}
    assert {
        "entry create", "entry show", "entry update", "entry delete", "entry count",
        "token generate", "agent list", "agent show", "agent ban", "agent evict",
        "bundle show", "bundle list", "bundle set", "bundle delete",
        "federation create", "federation list", "federation show", "federation update",
        "federation delete", "federation refresh", "login", "logout",
    } <= names  # fmt: skip
    for kind in ("x509", "jwt"):
        for action in ("show", "prepare", "activate", "taint", "revoke"):
            assert f"localauthority {kind} {action}" in names


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_help_on_every_command(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    for spelling in ("-help", "--help", "-h"):
        assert main([*words, spelling]) == 0
        shown = capsys.readouterr().out
        assert shown.startswith(f"usage: hallmark {' '.join(words)}")
        assert "-help" in shown


def test_the_api_commands_start_no_django_and_exit_2_without_a_token(
    clean_env: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    script = (
        "import sys; from config.cli import main; code = main(['entry', 'count']); "
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.stdout.split("\n")[0] == "2 []", ran.stderr
    assert "export HALLMARK_API_TOKEN=" in ran.stderr


def test_a_redirect_is_not_followed_so_the_token_never_reaches_its_target(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, serve: list[Recorder],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # given an API address that redirects to another host
    elsewhere = _start(serve, (200, {"Content-Type": "application/json"}, b"[]"))
    redirecting = _start(serve, (307, {"Location": f"{elsewhere.url}/api/v1/entries"}, b""))
    monkeypatch.setenv("HALLMARK_API_URL", redirecting.url)
    monkeypatch.setenv("HALLMARK_API_TOKEN", TOKEN)
    # when a command runs
    code = main(["entry", "show"])
    # then it stops at the redirect, says so, and the other host saw nothing
    assert code == 1
    assert "redirected" in capsys.readouterr().err
    assert redirecting.seen == [("/api/v1/entries", f"Bearer {TOKEN}")]
    assert elsewhere.seen == []


def test_a_stored_token_is_never_sent_to_another_api_url(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, serve: list[Recorder],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # given a login stored for one API, and HALLMARK_API_URL naming another
    credentials.store({"api_url": "https://hallmark.example.com", "token": TOKEN})
    other = _start(serve, (200, {"Content-Type": "application/json"}, b"[]"))
    monkeypatch.setenv("HALLMARK_API_URL", other.url)
    # when a command runs
    code = main(["agent", "list"])
    # then nothing is sent, and the message names the mismatch
    assert code == 2 and other.seen == []
    said = capsys.readouterr().err
    assert "is for https://hallmark.example.com" in said and "export HALLMARK_API_TOKEN" in said


def test_a_credentials_file_of_another_user_is_refused(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = credentials.store({"api_url": "http://127.0.0.1:9", "token": TOKEN})
    if os.geteuid() == 0:
        os.chown(path, 4242, -1)
        assert main(["entry", "count"]) == 2
        assert "belongs to another user" in capsys.readouterr().err
        os.chown(path, os.geteuid(), -1)
    path.chmod(0o640)
    assert main(["entry", "count"]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_store_tightens_an_existing_directory_and_never_leaves_a_readable_file(
    clean_env: Path,
) -> None:
    clean_env.parent.mkdir(parents=True, mode=0o755)
    clean_env.parent.chmod(0o755)
    credentials.store({"api_url": "http://127.0.0.1:9", "token": TOKEN})
    assert oct(clean_env.parent.stat().st_mode & 0o777) == oct(0o700)
    assert oct(clean_env.stat().st_mode & 0o777) == oct(0o600)
    assert [p.name for p in clean_env.parent.iterdir()] == ["credentials"]  # no temp file left


def test_unreachable_api_exits_1_and_json_errors_go_to_stderr(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HALLMARK_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HALLMARK_API_TOKEN", TOKEN)
    assert main(["federation", "list", "-output", "json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and '"code": "api_unreachable"' in captured.err
    assert main(["entry", "create", "-output", "json", "-bogus"]) == 2
    assert '"code": "usage"' in capsys.readouterr().err


def test_an_api_url_that_is_not_http_is_a_usage_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HALLMARK_API_URL", "file:///etc/passwd")
    monkeypatch.setenv("HALLMARK_API_TOKEN", TOKEN)
    assert main(["bundle", "show"]) == 2
    assert "is not an http:// or https:// URL" in capsys.readouterr().err


def test_logout_without_a_login_says_so_and_exits_0(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logout"]) == 0
    assert capsys.readouterr().out.startswith("Not logged in")
