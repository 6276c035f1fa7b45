"""deploy/terraform's https_spiffe bundle endpoint: the process `hallmark up` runs, on its own
Deployment, reached through a TCP-passthrough Service, with no metrics port it does not serve.

Where it matters, Terraform itself evaluates the module's variables and locals (the
`terraform` fixture); the rest reads the module as data."""

from __future__ import annotations

import dataclasses
import json
import re

from config.supervisor import METRICS_KINDS, ControlPlane
from tests.deploy.terraform_module import (
    MODULE,
    Evaluator,
    Module,
    dynamic,
    first,
    process_container,
)

# Kubernetes port names are IANA service names: at most 15 characters, at least one letter.
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


def test_terraform_runs_the_bundle_endpoint_as_hallmark_up_does(terraform: Evaluator):
    from config.cli import _parser

    values, errors = terraform.apply(
        {},
        {
            "command": 'local.processes["bundle-endpoint"].command',
            "port": 'local.processes["bundle-endpoint"].port',
            "env": "local.metrics_env",
            "metrics_kinds": "local.metrics_kinds",
        },
    )
    args = _parser().parse_args(values["command"][1:])
    default = dataclasses.fields(ControlPlane)
    supervisor_port = next(f.default for f in default if f.name == "bundle_endpoint")[1]

    assert errors == []
    assert values["command"][0] == "hallmark"
    assert args.command == "bundle-endpoint"
    assert args.listen == ("0.0.0.0", supervisor_port) and args.reuse_port is True
    assert values["port"] == {"name": "tcp-bundle", "number": supervisor_port}
    # The role every log line carries, as the supervisor sets it; a metrics listener only
    # where the supervisor gives the kind one.
    assert {kind: env["HALLMARK_PROCESS_ROLE"] for kind, env in values["env"].items()} == {
        kind: kind for kind in values["env"]
    }
    assert sorted(values["metrics_kinds"]) == sorted(METRICS_KINDS)
    assert values["env"]["bundle-endpoint"] == {"HALLMARK_PROCESS_ROLE": "bundle-endpoint"}
    for kind in METRICS_KINDS:
        assert values["env"][kind]["HALLMARK_METRICS_LISTEN"] == "0.0.0.0:9100", kind


def test_bundle_endpoint_pods_are_sized_probed_and_budgeted_like_the_agent_api(
    module: Module, terraform: Evaluator
):
    processes = module.locals["processes"]
    ours, agent_api = processes["bundle-endpoint"], processes["agent-api"]
    values, errors = terraform.apply(
        {"bundle_endpoint_replicas": 3},
        {
            "replicas": 'local.processes["bundle-endpoint"].replicas',
            "resources": 'local.processes["bundle-endpoint"].resources',
        },
    )

    assert errors == []
    assert values["replicas"] == 3
    assert set(values["resources"]["requests"]) == {"cpu", "memory"}
    assert set(values["resources"]["limits"]) == {"memory"}  # no CPU limit, as every kind
    assert ours["resources"] == "${var.resources.bundle_endpoint}"
    for key in ("strategy", "readiness_path", "spread_over_nodes", "disruption_budgeted"):
        assert ours[key] == agent_api[key], key
    # No readiness path: readiness and liveness are TCP checks of the named port.
    assert ours["readiness_path"] is None and ours["port"]["name"].startswith("tcp-")
    container = process_container(module)
    readiness = json.dumps(first(dynamic(container, "readiness_probe")["content"]))
    liveness = first(dynamic(container, "liveness_probe")["content"])
    assert "tcp_socket" in readiness and "readiness_path == null ? [1] : []" in readiness
    assert first(liveness["tcp_socket"])["port"] == "${liveness_probe.value.name}"


def test_bundle_endpoint_pods_claim_no_metrics_they_do_not_serve(module: Module):
    """config/cli.py's bundle-endpoint starts no metrics listener, the supervisor gives it no
    metrics port: no container port, scrape annotation or metrics Service for it."""
    processes = module.locals["processes"]
    container = process_container(module)
    metrics_port = first(
        [
            d["port"]
            for d in container["dynamic"]
            if "port" in d and first(d["port"]["content"])["name"] == "metrics"
        ]
    )
    deployment = first(module.resource("kubernetes_deployment_v1", "process")["spec"])
    annotations = first(first(deployment["template"])["metadata"])["annotations"]
    metrics_service = module.resource("kubernetes_service_v1", "metrics")

    assert {kind for kind, p in processes.items() if p["serves_metrics"]} == set(METRICS_KINDS)
    assert processes["bundle-endpoint"]["serves_metrics"] is False
    assert "each.value.serves_metrics ? [var.metrics_port] : []" in metrics_port["for_each"]
    assert all(port["name"] != "metrics" for port in container.get("port", []))
    assert re.search(r"each\.value\.serves_metrics \? \{[^}]*prometheus\.io/scrape", annotations)
    assert metrics_service["for_each"] == "${toset(local.metrics_kinds)}"
    assert "process.serves_metrics" in module.locals["metrics_kinds"]
    assert "process.serves_metrics ? {HALLMARK_METRICS_LISTEN" in module.locals["metrics_env"]


def test_every_port_name_is_a_valid_kubernetes_port_name(module: Module):
    names = [p["port"]["name"] for p in module.locals["processes"].values() if p["port"]]
    for service in module.resources["kubernetes_service_v1"].values():
        names += [port["name"] for port in first(service["spec"])["port"]]

    assert "tcp-bundle" in names
    assert [name for name in names if not PORT_NAME.match(name)] == []


def test_outputs_give_the_bundle_endpoint_address_like_the_agent_apis(module: Module):
    def mirrored(name: str) -> str:
        return (
            json.dumps(module.outputs[name])
            .replace("agent_endpoint", "AGENT_ENDPOINT")
            .replace("agent_api", "bundle_endpoint")
            .replace("agent-API", "bundle-endpoint")
        )

    service = module.outputs["bundle_endpoint_service"]
    balancer = module.outputs["bundle_endpoint_load_balancer"]
    outputs_doc = (MODULE / "README.md").read_text().split("## Outputs", 1)[1]

    assert "kubernetes_service_v1.bundle_endpoint.metadata[0].name" in service["value"]
    assert "var.bundle_endpoint_service_port" in service["value"]
    assert balancer["value"] == json.loads(mirrored("agent_api_load_balancer"))["value"]
    assert [name for name in module.outputs if f"`{name}`" not in outputs_doc] == []
