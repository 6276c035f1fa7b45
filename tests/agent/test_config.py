"""Agent configuration: flags, TOML file, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, ConfigError, ServerAddress
from agent.trust import BootstrapError, load_bundle_file

BASE: dict[str, Any] = {
    "server": "127.0.0.1:8081",
    "trust_domain": "example.org",
    "join_token": "secret",
    "trust_bundle": "/etc/hallmark/bundle.pem",
}


def test_flags_make_a_complete_config() -> None:
    config = AgentConfig.load({**BASE, "socket": "/run/agent.sock", "data_dir": "/var/agent"})

    assert config.server == ServerAddress("127.0.0.1", 8081)
    assert config.trust_domain.name == "example.org"
    assert config.socket == "/run/agent.sock"
    assert config.data_dir == "/var/agent"
    assert config.trust_bundle == "/etc/hallmark/bundle.pem"
    assert not config.insecure_bootstrap


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    # given a TOML file with an [agent] table
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\nserver = "10.0.0.1:9000"\ntrust_domain = "file.org"\n'
        'insecure_bootstrap = true\nsocket = "/file.sock"\nsync_interval = 2\n'
    )

    # when flags give some values too
    config = AgentConfig.load({"trust_domain": "flag.org", "socket": None}, str(path))

    # then flags win and the file fills the rest
    assert config.trust_domain.name == "flag.org"
    assert str(config.server) == "10.0.0.1:9000"
    assert config.socket == "/file.sock"
    assert config.insecure_bootstrap
    assert config.sync_interval == 2.0


def test_both_trust_bundle_options_are_refused() -> None:
    with pytest.raises(
        ConfigError,
        match="exactly one way to trust the server.*got --trust-bundle and --trust-bundle-url",
    ):
        AgentConfig.load({**BASE, "trust_bundle_url": "https://example.org/bundle"})


def test_no_trust_bundle_option_is_refused() -> None:
    flags = {k: v for k, v in BASE.items() if k != "trust_bundle"}
    with pytest.raises(ConfigError, match="none was given"):
        AgentConfig.load(flags)


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:0", "no valid port"),
        ("127.0.0.1:70000", "no valid port"),
        ("127.0.0.1:http", "no valid port"),
        (":8081", "no valid host"),
        ("http://host:8081", "has a scheme"),
        ("[::1", "unclosed"),
    ],
)
def test_bad_server_address_is_refused_with_a_hint(server: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        AgentConfig.load({**BASE, "server": server})
    assert "HOST:PORT" in info.value.detail


def test_ipv6_server_address_is_accepted() -> None:
    assert ServerAddress.parse("[::1]:8081").target == "[::1]:8081"


def test_bad_trust_domain_is_refused() -> None:
    with pytest.raises(ConfigError, match="trust_domain"):
        AgentConfig.load({**BASE, "trust_domain": "Example.org"})


def test_missing_server_says_which_flag_to_pass() -> None:
    flags = {k: v for k, v in BASE.items() if k != "server"}
    with pytest.raises(ConfigError, match="pass --server"):
        AgentConfig.load(flags)


def test_unknown_config_file_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('serverr = "x"\n')
    with pytest.raises(ConfigError, match="unknown agent setting.*serverr"):
        AgentConfig.load(BASE, str(path))


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("server = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        AgentConfig.load(BASE, str(path))


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        AgentConfig.load(BASE, str(tmp_path / "nope.toml"))


def test_trust_bundle_url_must_be_http() -> None:
    flags = {**BASE, "trust_bundle": None, "trust_bundle_url": "file:///etc/passwd"}
    with pytest.raises(ConfigError, match="must be an http"):
        AgentConfig.load(flags)


def test_trust_bundle_file_that_is_neither_pem_nor_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    path.write_text("hello")
    with pytest.raises(BootstrapError, match="neither PEM certificates nor a SPIFFE bundle"):
        load_bundle_file(AgentConfig.load(BASE).trust_domain, str(path))
