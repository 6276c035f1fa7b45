"""deploy/terraform/agent: the agent DaemonSet, read as data and held against the agent's code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, read_toml
from attestors.workload.catalog import WorkloadAttestors
from tests.deploy.terraform_module import MODULE, Module, first, load_module

AGENT = MODULE / "agent"


@pytest.fixture(scope="module")
def agent_module() -> Module:
    return load_module(AGENT)


def pod_spec(module: Module) -> dict[str, Any]:
    spec = first(module.resource("kubernetes_daemon_set_v1", "agent")["spec"])
    return first(first(spec["template"])["spec"])


def render_agent_toml(values: dict[str, Any]) -> str:
    """The template as Terraform's templatefile renders it (its ${} and one %{if})."""
    text = (AGENT / "agent.toml.tftpl").read_text()
    condition = re.compile(r"%\{ if (\w+) ~\}\n(.*?)%\{ endif ~\}\n", re.DOTALL)
    text = condition.sub(lambda m: m.group(2) if values[m.group(1)] else "", text)
    for key, value in values.items():
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        text = text.replace(f"${{{key}}}", shown)
    assert "${" not in text and "%{" not in text
    return text


def test_the_rendered_config_is_one_the_agent_accepts(tmp_path: Path) -> None:
    # given the ConfigMap's agent.toml for a cluster
    path = tmp_path / "agent.toml"
    path.write_text(
        render_agent_toml(
            {
                "server": "hallmark.example.com:8081",
                "trust_domain": "acme.example",
                "trust_bundle_url": "https://hallmark.example.com/bundle/acme.example",
                "cluster": "prod-eu",
                "skip_kubelet_verification": True,
                "unix_workload_attestor": True,
            }
        )
    )

    # when the agent loads it
    config = AgentConfig.load({}, str(path))

    # then it serves the socket the DaemonSet mounts, with the k8s attestor on
    assert config.socket == "/run/hallmark-agent/sockets/agent.sock"
    assert sorted(WorkloadAttestors(config.workload_attestor).names) == ["k8s", "unix"]
    assert read_toml(str(path))["workload_attestor"]["k8s"] == {"skip_kubelet_verification": True}


def test_the_daemonset_shares_the_hosts_pids_and_the_socket_directory(
    agent_module: Module,
) -> None:
    spec = pod_spec(agent_module)
    container = first(spec["container"])
    mounts = {m["name"]: m["mount_path"] for m in container["volume_mount"]}
    volumes = {v["name"]: v for v in spec["volume"]}

    assert spec["host_pid"] is True  # SO_PEERCRED pids and /proc/<pid>/cgroup are the host's
    assert first(volumes["sockets"]["host_path"])["path"] == "${var.socket_host_dir}"
    assert mounts["sockets"] == "${local.socket_mount}"
    assert agent_module.locals["socket_mount"] == "/run/hallmark-agent/sockets"
    env = first(container["env"])
    assert env["name"] == "MY_NODE_NAME"  # the k8s attestor's default node_name_env


def test_the_projected_token_has_the_k8s_psat_audience_at_the_configured_path(
    agent_module: Module,
) -> None:
    spec = pod_spec(agent_module)
    volumes = {v["name"]: v for v in spec["volume"]}
    token = first(first(first(volumes["psat"]["projected"])["sources"])["service_account_token"])
    mounts = {m["name"]: m["mount_path"] for m in first(spec["container"])["volume_mount"]}
    template = (AGENT / "agent.toml.tftpl").read_text()

    assert token["audience"] == "${var.token_audience}"
    assert f'token_path = "{mounts["psat"]}/{token["path"]}"' in template


def test_every_agent_variable_is_documented(agent_module: Module) -> None:
    readme = (MODULE / "README.md").read_text()
    section = readme[readme.index("## The agent on Kubernetes nodes") :]

    for name, variable in agent_module.variables.items():
        assert f"`{name}`" in section, name
        assert variable.get("description"), name
