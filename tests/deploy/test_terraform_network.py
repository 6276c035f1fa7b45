"""deploy/terraform: the agent API and the https_spiffe bundle endpoint terminate TLS in the pod
(per tenant, by SNI), so they are reached by TCP passthrough only, never through TLS
termination on a load balancer or an Ingress."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.terraform_module import Evaluator, Module, first

TLS_TERMINATING = [
    "service.beta.kubernetes.io/aws-load-balancer-ssl-cert",
    "service.beta.kubernetes.io/aws-load-balancer-ssl-ports",
    "service.beta.kubernetes.io/do-loadbalancer-certificate-id",
    "service.beta.kubernetes.io/oci-load-balancer-tls-secret",
    "load-balancer.hetzner.cloud/http-certificates",
]
PROTOCOL_KEYS = [
    "service.beta.kubernetes.io/aws-load-balancer-backend-protocol",
    "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol",
    "service.beta.kubernetes.io/do-loadbalancer-protocol",
    "load-balancer.hetzner.cloud/protocol",
]
HARMLESS = [
    "service.beta.kubernetes.io/aws-load-balancer-type",
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type",
    "networking.gke.io/load-balancer-type",
]

# (Service resource and variable prefix, process kind) of each TLS-in-the-pod listener.
PASSTHROUGH = [("agent_api", "agent-api"), ("bundle_endpoint", "bundle-endpoint")]
MIRRORED = [
    "service_type",
    "service_port",
    "service_annotations",
    "external_traffic_policy",
    "load_balancer_source_ranges",
]
BAD = {
    "service_type": "Ingress",
    "service_port": 70000,
    "external_traffic_policy": "Sometimes",
    "service_annotations": {
        "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": "arn:aws:acm:eu-west-1:1:certificate/x",
        "service.beta.kubernetes.io/aws-load-balancer-backend-protocol": "http",
    },
}
GOOD = {
    "service_type": "NodePort",
    "service_port": 443,
    "external_traffic_policy": "Local",
    "load_balancer_source_ranges": ["203.0.113.0/24"],
    "service_annotations": {
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
        "service.beta.kubernetes.io/aws-load-balancer-backend-protocol": "TCP",
    },
}


@pytest.mark.parametrize(("prefix", "kind"), PASSTHROUGH)
def test_passthrough_service_is_plain_tcp_to_the_pods(module: Module, prefix: str, kind: str):
    service = module.resource("kubernetes_service_v1", prefix)
    spec = first(service["spec"])
    process_port = module.locals["processes"][kind]["port"]["name"]

    assert first(service["metadata"])["annotations"] == f"${{var.{prefix}_service_annotations}}"
    assert f'"app.kubernetes.io/component" = "{kind}"' in spec["selector"]
    assert spec["type"] == f"${{var.{prefix}_service_type}}"
    for port in spec["port"]:
        assert port["protocol"] == "TCP"
        assert port["target_port"] == process_port
        # Meshes treat http-/grpc-/h2-named ports as L7 and would break TLS passthrough.
        assert not re.match(r"(https?|grpc|h2)", port["name"])


@pytest.mark.parametrize("prefix", [prefix for prefix, _ in PASSTHROUGH])
def test_annotations_that_terminate_tls_are_refused(module: Module, prefix: str):
    conditions = [
        v["condition"] for v in module.variables[f"{prefix}_service_annotations"]["validation"]
    ]
    key_patterns = [re.findall(r'regex\("(.+?)", key\)', c)[0] for c in conditions]
    refused, protocol_checked = key_patterns

    for key in TLS_TERMINATING:
        assert re.search(refused, key), key
    for key in PROTOCOL_KEYS:
        assert re.search(protocol_checked, key), key
    assert 'lower(value) == "tcp"' in conditions[1]
    for key in HARMLESS:
        assert not re.search(refused, key) and not re.search(protocol_checked, key), key


def test_no_ingress_routes_to_the_agent_api_or_the_bundle_endpoint(module: Module):
    for ingress in module.resources.get("kubernetes_ingress_v1", {}).values():
        backends = re.findall(r'"name": "(\$\{[^"]+\})"', json.dumps(ingress["spec"]))
        assert backends and all("kubernetes_service_v1.web." in b for b in backends)


def test_bundle_endpoint_service_and_variables_mirror_the_agent_apis(module: Module):
    """The same Service shape; the same variables with the same types and checks."""

    def as_bundle_endpoint(value: object) -> str:
        return (
            json.dumps(value)
            .replace("tcp-agent-api", "tcp-bundle")
            .replace("agent_api", "bundle_endpoint")
            .replace("agent-api", "bundle-endpoint")
        )

    agent_api = module.resource("kubernetes_service_v1", "agent_api")
    bundle_endpoint = module.resource("kubernetes_service_v1", "bundle_endpoint")

    assert json.dumps(bundle_endpoint) == as_bundle_endpoint(agent_api)
    for suffix in MIRRORED:
        ours = module.variables[f"bundle_endpoint_{suffix}"]
        theirs = module.variables[f"agent_api_{suffix}"]
        assert ours["type"] == theirs["type"], suffix
        conditions = [v["condition"] for v in ours.get("validation", [])]
        assert json.dumps(conditions) == as_bundle_endpoint(
            [v["condition"] for v in theirs.get("validation", [])]
        ), suffix
    assert module.variables["bundle_endpoint_service_type"]["default"] == "LoadBalancer"
    assert module.variables["bundle_endpoint_service_port"]["default"] == 8443


def test_terraform_refuses_bad_passthrough_and_replica_values(terraform: Evaluator):
    """Terraform's own evaluation of the validations, for both listeners alike."""
    bad = {
        f"{prefix}_{suffix}": value for prefix, _ in PASSTHROUGH for suffix, value in BAD.items()
    }
    _, errors = terraform.apply({**bad, "agent_api_replicas": 0, "bundle_endpoint_replicas": 1.5})
    refused = "\n".join(errors)

    for prefix, _ in PASSTHROUGH:
        assert f"{prefix}_replicas must be a whole number of at least 1" in refused
        assert f"{prefix}_service_type must be ClusterIP, NodePort or LoadBalancer" in refused
        assert f"{prefix}_service_port must be a TCP port number" in refused
        assert f"{prefix}_external_traffic_policy must be Local or Cluster" in refused
        assert f"{prefix}_service_annotations must not configure TLS/SSL" in refused
        assert f"{prefix}_service_annotations may set a load balancer *protocol" in refused
    assert len(errors) == len(PASSTHROUGH) * 6


def test_terraform_accepts_passthrough_settings_an_operator_would_use(terraform: Evaluator):
    good = {f"bundle_endpoint_{suffix}": value for suffix, value in GOOD.items()}
    values, errors = terraform.apply(
        {**good, "bundle_endpoint_replicas": 5},
        {
            "replicas": 'local.processes["bundle-endpoint"].replicas',
            "port": "var.bundle_endpoint_service_port",
        },
    )

    assert errors == []
    assert values == {"replicas": 5, "port": 443}
