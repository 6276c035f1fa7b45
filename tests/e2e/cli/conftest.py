"""Fixtures for the SPIRE-style CLI against the session's real `hallmark up`.

The commands run in this process through `config.cli.main` (the `hallmark` entry point), so
each call costs no Python start-up yet still goes over HTTP to the real control plane; the
environment (HALLMARK_API_URL, HALLMARK_API_TOKEN, XDG_CONFIG_HOME) is set per call.
"""

from __future__ import annotations

import io
import json
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config.cli import main
from tests.e2e.conftest import ControlPlaneProcess

PASSWORD = "correct horse battery staple"  # what ControlPlaneProcess.signup uses


@dataclass
class Run:
    """One command's exit code and output."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error(self) -> dict[str, Any]:
        """The `{code, detail}` a `-output json` run prints on stderr when it fails."""
        return dict(json.loads(self.err.strip().splitlines()[-1])["error"])


@dataclass
class CliTenant:
    """A tenant signed up on the plane, as the CLI sees it."""

    token: str
    trust_domain: str
    email: str
    slug: str

    def id(self, path: str) -> str:
        return f"spiffe://{self.trust_domain}/{path.lstrip('/')}"


Hallmark = Callable[..., Run]


def _tenant(plane: ControlPlaneProcess, label: str) -> CliTenant:
    answer: dict[str, Any] = plane.signup(label)
    trust_domain = str(answer["trust_domain"])
    return CliTenant(
        token=str(answer["token"]),
        trust_domain=trust_domain,
        email=f"ops@{trust_domain}",
        slug=str(answer["tenant"]["slug"]),
    )


@pytest.fixture(scope="package")
def cli_a(control_plane: ControlPlaneProcess) -> CliTenant:
    return _tenant(control_plane, "cli-a")


@pytest.fixture(scope="package")
def cli_b(control_plane: ControlPlaneProcess) -> CliTenant:
    return _tenant(control_plane, "cli-b")


@pytest.fixture
def config_home(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def hallmark(
    control_plane: ControlPlaneProcess,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    config_home: Path,
) -> Hallmark:
    """`hallmark(token, *argv, stdin=None)`: run one command as the holder of `token`."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setenv("HALLMARK_API_URL", control_plane.http)

    def run(token: str | None, *argv: str, stdin: str | None = None) -> Run:
        if token is None:
            monkeypatch.delenv("HALLMARK_API_TOKEN", raising=False)
        else:
            monkeypatch.setenv("HALLMARK_API_TOKEN", token)
        if stdin is not None:
            fake = io.TextIOWrapper(io.BytesIO(stdin.encode()))
            monkeypatch.setattr(sys, "stdin", fake)
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def unique(label: str) -> str:
    return f"{label}-{secrets.token_hex(3)}"


def entry_ids(text: str) -> list[str]:
    """The `Entry ID : …` values of pretty output, in order."""
    return [
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Entry ID")
    ]
