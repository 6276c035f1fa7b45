"""Where the agent takes its join token and bundle URL from, and what it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import JOIN_TOKEN_ENV, AgentConfig, ConfigError
from tests.agent.test_cli import hallmark_agent

BASE: dict[str, Any] = {
    "server": "127.0.0.1:8081",
    "trust_domain": "example.org",
    "trust_bundle": "/etc/hallmark/bundle.pem",
}


def test_join_token_is_read_from_a_file(tmp_path: Path) -> None:
    # given the token in a file, with a trailing newline as editors write it
    path = tmp_path / "token"
    path.write_text("s3cret-token\n")

    # when the config names the file
    config = AgentConfig.load({**BASE, "join_token_file": str(path)}, environ={})

    # then the token is the file's content
    assert config.join_token == "s3cret-token"


def test_join_token_is_read_from_the_environment() -> None:
    config = AgentConfig.load(BASE, environ={JOIN_TOKEN_ENV: "from-env"})

    assert config.join_token == "from-env"


def test_join_token_flag_wins_over_the_environment() -> None:
    config = AgentConfig.load({**BASE, "join_token": "flag"}, environ={JOIN_TOKEN_ENV: "env"})

    assert config.join_token == "flag"


def test_join_token_given_twice_is_refused(tmp_path: Path) -> None:
    # given a config file naming both a token and a token file
    path = tmp_path / "agent.toml"
    path.write_text(f'join_token = "a"\njoin_token_file = "{tmp_path / "t"}"\n')

    # then the agent refuses rather than guessing which one was meant
    with pytest.raises(ConfigError) as info:
        AgentConfig.load(BASE, str(path), environ={})
    assert info.value.code == "join_token_conflict"


@pytest.mark.parametrize("content", ["", "two tokens\n", "x" * 5000])
def test_join_token_file_must_hold_one_token(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)

    with pytest.raises(ConfigError) as info:
        AgentConfig.load({**BASE, "join_token_file": str(path)}, environ={})
    assert info.value.code == "join_token_file_invalid"


def test_missing_join_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read join token file") as info:
        AgentConfig.load({**BASE, "join_token_file": str(tmp_path / "nope")}, environ={})
    assert info.value.code == "join_token_file_unreadable"


def test_plain_http_bundle_url_is_refused_without_insecure_bootstrap() -> None:
    flags = {**BASE, "trust_bundle": None, "trust_bundle_url": "http://plane/bundle/td"}

    with pytest.raises(ConfigError, match="https://") as info:
        AgentConfig.load(flags, environ={})
    assert info.value.code == "insecure_trust_bundle_url"


def test_plain_http_bundle_url_is_accepted_with_insecure_bootstrap() -> None:
    flags = {
        **BASE,
        "trust_bundle": None,
        "trust_bundle_url": "http://plane/bundle/td",
        "insecure_bootstrap": True,
    }

    config = AgentConfig.load(flags, environ={})

    assert config.trust_bundle_url == "http://plane/bundle/td"


def test_https_bundle_url_with_insecure_bootstrap_is_still_two_choices() -> None:
    flags = {
        **BASE,
        "trust_bundle": None,
        "trust_bundle_url": "https://plane/bundle/td",
        "insecure_bootstrap": True,
    }

    with pytest.raises(ConfigError, match="exactly one way"):
        AgentConfig.load(flags, environ={})


def test_cli_refuses_a_plain_http_bundle_url() -> None:
    # when the agent is started with an http bundle URL and nothing else insecure
    result = hallmark_agent(
        "run",
        "--server",
        "127.0.0.1:1",
        "--trust-domain",
        "example.org",
        "--trust-bundle-url",
        "http://127.0.0.1:1/bundle/example.org",
    )

    # then it stops before doing anything, saying how to fix it
    assert result.returncode == 2
    assert "hallmark-agent: insecure_trust_bundle_url: " in result.stderr
    assert "https://" in result.stderr and "--insecure-bootstrap" in result.stderr
