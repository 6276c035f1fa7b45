"""`[node_attestor.<type>]` tables of the agent's TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError

BASE = 'server = "127.0.0.1:8081"\ntrust_domain = "example.org"\ninsecure_bootstrap = true\n'


def load(tmp_path: Path, text: str, **flags: object) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return AgentConfig.load(flags, str(path), environ={})


def test_node_attestor_table_beside_the_agent_table(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "[agent]\n" + BASE + '\n[node_attestor.k8s_psat]\ncluster = "prod"\n'
        'token_path = "/var/run/secrets/tokens/spire-agent"\n',
    )
    assert config.join_token is None
    assert config.node_attestor == {
        "k8s_psat": {"cluster": "prod", "token_path": "/var/run/secrets/tokens/spire-agent"}
    }


def test_node_attestor_table_at_the_top_level(tmp_path: Path) -> None:
    config = load(tmp_path, BASE + '[node_attestor.x509pop]\ncertificate_path = "/c"\n')
    assert config.node_attestor == {"x509pop": {"certificate_path": "/c"}}


def test_two_node_attestors_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, BASE + "[node_attestor.x509pop]\n[node_attestor.k8s_psat]\n")
    assert refused.value.code == "node_attestor_conflict"


def test_a_join_token_and_a_node_attestor_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, BASE + '[node_attestor.k8s_psat]\ncluster = "prod"\n', join_token="t")
    assert refused.value.code == "node_attestor_conflict"
