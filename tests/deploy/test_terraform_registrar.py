"""deploy/terraform/registrar: the ClusterSPIFFEID CRD, the Deployment and its RBAC, read as
data and held against the registrar's code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from registrar import identities
from registrar.cli import parser
from registrar.controller import CLUSTER_SPIFFE_IDS, NAMESPACES, PODS, Settings
from registrar.identities import ClusterSpiffeId
from registrar.templates import TemplateError
from tests.deploy.terraform_module import MODULE, Module, first, load_module

REGISTRAR = MODULE / "registrar"
CRD = REGISTRAR / "crds" / "clusterspiffeids.hallmark.dev.yaml"


@pytest.fixture(scope="module")
def registrar_module() -> Module:
    return load_module(REGISTRAR)


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return document


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def container(module: Module) -> dict[str, Any]:
    spec = first(module.resource("kubernetes_deployment_v1", "registrar")["spec"])
    return first(first(first(spec["template"])["spec"])["container"])


def test_the_crd_serves_the_resource_the_registrar_watches(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    names = crd["spec"]["names"]

    path = f"/apis/{crd['spec']['group']}/{version['name']}/{names['plural']}"

    assert path == CLUSTER_SPIFFE_IDS
    assert crd["metadata"]["name"] == f"{names['plural']}.{crd['spec']['group']}"
    assert crd["spec"]["scope"] == "Cluster"
    assert names["kind"] == "ClusterSPIFFEID"
    assert (version["served"], version["storage"]) == (True, True)


def test_a_resource_using_every_field_of_the_schema_is_one_the_registrar_reads(
    crd: dict[str, Any],
) -> None:
    # given a resource with every spec field the CRD's schema declares
    example = {
        "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}",
        "podSelector": {
            "matchLabels": {"app": "billing"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend"]}],
        },
        "namespaceSelector": {"matchLabels": {"team": "payments"}},
        "workloadSelectorTemplates": ["k8s:sa:{{ .PodSpec.ServiceAccountName }}"],
        "dnsNameTemplates": ["{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc"],
        "ttl": "1h",
        "jwtTtl": 300,
        "federatesWith": ["partner.example"],
        "hint": "internal",
        "admin": False,
        "downstream": False,
    }
    assert set(example) == set(spec_schema(crd)["properties"])
    assert set(spec_schema(crd)["required"]) <= set(example)

    # when the registrar reads it, then every field lands in what it renders
    parsed = ClusterSpiffeId.parse({"metadata": {"name": "billing"}, "spec": example})
    assert (parsed.x509_svid_ttl, parsed.jwt_svid_ttl) == (3600, 300)
    assert parsed.federates_with == ("partner.example",)
    assert parsed.hint == "internal"


def test_the_schema_and_the_registrar_refuse_the_same_selector_operators(
    crd: dict[str, Any],
) -> None:
    expression = spec_schema(crd)["properties"]["podSelector"]["properties"]["matchExpressions"]
    operators = expression["items"]["properties"]["operator"]["enum"]
    for operator in operators:
        ClusterSpiffeId.parse(
            {
                "metadata": {"name": "x"},
                "spec": {
                    "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/x",
                    "podSelector": {
                        "matchExpressions": [{"key": "k", "operator": operator, "values": ["v"]}]
                    },
                },
            }
        )
    with pytest.raises(TemplateError):
        ClusterSpiffeId.parse(
            {
                "metadata": {"name": "x"},
                "spec": {
                    "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/x",
                    "podSelector": {"matchExpressions": [{"key": "k", "operator": "Near"}]},
                },
            }
        )


def test_the_cluster_role_only_reads_what_the_registrar_watches(registrar_module: Module) -> None:
    role = registrar_module.resource("kubernetes_cluster_role_v1", "registrar")
    granted = {
        (group, resource, verb)
        for rule in role["rule"]
        for group in rule["api_groups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    watched = {
        ("", PODS.rsplit("/", 1)[1]),
        ("", NAMESPACES.rsplit("/", 1)[1]),
        (identities.GROUP, identities.PLURAL),
    }

    assert granted == {(g, r, v) for g, r in watched for v in ("get", "list", "watch")}


def test_the_deployment_runs_a_registrar_command_line_the_cli_accepts(
    registrar_module: Module,
) -> None:
    box = container(registrar_module)
    # the variables as an operator sets them (their defaults, and values for the required ones)
    values = {
        f"${{{wrap}}}": str(value)
        for name, value in (
            *((n, v.get("default")) for n, v in registrar_module.variables.items()),
            ("server_url", "https://hallmark.example.com"),
            ("cluster", "prod-eu"),
        )
        for wrap in (f"var.{name}", f"tostring(var.{name})")
    }
    args = parser().parse_args([values.get(a, a) for a in box["args"]])
    mount = first(box["volume_mount"])

    assert box["command"] == ["hallmark-registrar"]
    assert (args.server, args.cluster_name, args.resync) == (
        "https://hallmark.example.com",
        "prod-eu",
        300.0,
    )
    assert args.token_file == "${local.token_mount}/token"
    assert mount["mount_path"] == "${local.token_mount}"
    assert registrar_module.variables["parent_id_template"]["default"] == (
        Settings.parent_id_template
    )
    secret = registrar_module.resource("kubernetes_secret_v1", "registrar")
    assert set(secret["data"]) == {Path(args.token_file).name}
    assert registrar_module.variables["api_token"]["sensitive"] is True
    assert first(box["security_context"])["read_only_root_filesystem"] is True


def test_the_crd_is_installed_from_the_manifest_file(registrar_module: Module) -> None:
    manifest = registrar_module.resource("kubernetes_manifest", "clusterspiffeid_crd")
    assert f"crds/{CRD.name}" in manifest["manifest"]
