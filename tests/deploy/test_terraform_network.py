"""deploy/terraform: the agent API is reached by TCP passthrough only, never through TLS
termination or an Ingress."""

from __future__ import annotations

import json
import re

from tests.deploy.terraform_module import Module, first

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


def test_agent_api_service_is_plain_tcp_to_the_pods(module: Module):
    service = module.resource("kubernetes_service_v1", "agent_api")
    ports = first(service["spec"])["port"]
    process_port = module.locals["processes"]["agent-api"]["port"]["name"]

    assert first(service["metadata"])["annotations"] == "${var.agent_api_service_annotations}"
    for port in ports:
        assert port["protocol"] == "TCP"
        assert port["target_port"] == process_port
        # Meshes treat http-/grpc-/h2-named ports as L7 and would break TLS passthrough.
        assert not re.match(r"(https?|grpc|h2)", port["name"])


def test_agent_api_annotations_that_terminate_tls_are_refused(module: Module):
    conditions = [
        v["condition"] for v in module.variables["agent_api_service_annotations"]["validation"]
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


def test_no_ingress_routes_to_the_agent_api(module: Module):
    for ingress in module.resources.get("kubernetes_ingress_v1", {}).values():
        backends = re.findall(r'"name": "(\$\{[^"]+\})"', json.dumps(ingress["spec"]))
        assert backends and all("kubernetes_service_v1.web." in b for b in backends)
