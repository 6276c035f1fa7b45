"""`[workload_attestor.<type>]` tables in the agent's TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError

FLAGS = {
    "server": "127.0.0.1:8081",
    "trust_domain": "example.org",
    "join_token": "secret",
    "insecure_bootstrap": True,
}
TABLES = """
[workload_attestor.unix]

[workload_attestor.docker]
docker_socket_path = "unix:///var/run/docker.sock"

[workload_attestor.k8s]
skip_kubelet_verification = true
node_name = "worker-eu-1"
"""


@pytest.mark.parametrize("agent_table", ["", "[agent]\nsync_interval = 2\n"])
def test_the_tables_are_read_beside_or_without_an_agent_table(
    tmp_path: Path, agent_table: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(agent_table + TABLES)

    config = AgentConfig.load(FLAGS, str(path))

    assert set(config.workload_attestor) == {"unix", "docker", "k8s"}
    assert config.workload_attestor["k8s"]["node_name"] == "worker-eu-1"


def test_no_tables_means_unix_alone(tmp_path: Path) -> None:
    config = AgentConfig.load(FLAGS)

    assert config.workload_attestor == {}


@pytest.mark.parametrize(
    ("tables", "code"),
    [
        (
            "[workload_attestor.k8s]\nkubelet_read_only_port = 10255\n",
            "unsupported_workload_attestor_setting",
        ),
        ("[workload_attestor.cri]\n", "unknown_workload_attestor"),
        (
            '[workload_attestor.docker]\ndocker_socket_pth = "/x"\n',
            "invalid_workload_attestor_config",
        ),
    ],
    ids=["read-only-port", "unknown-type", "misspelt-setting"],
)
def test_a_bad_table_stops_the_agent_at_start_with_a_code(
    tmp_path: Path, tables: str, code: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(tables)

    with pytest.raises(ConfigError) as raised:
        AgentConfig.load(FLAGS, str(path))

    assert raised.value.code == code
