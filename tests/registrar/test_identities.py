"""ClusterSPIFFEID templates, label selectors and durations, as the registrar renders them."""

from __future__ import annotations

from typing import Any

import pytest

from registrar.identities import (
    Cluster,
    ClusterSpiffeId,
    desired_entries,
    duration_seconds,
    pod_entry,
)
from registrar.reconcile import owned, plan
from registrar.templates import TemplateError, render, selector_matches
from tests.registrar.fake_kube_api import cluster_spiffe_id, namespace, pod

CLUSTER = Cluster(
    trust_domain="acme.example",
    cluster_name="prod-eu",
    cluster_domain="cluster.local",
    parent_id_template=(
        "spiffe://{{ .TrustDomain }}/k8s-node/{{ .ClusterName }}/{{ .PodSpec.NodeName }}"
    ),
)
TEMPLATE = (
    "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
)


def resource(**spec: Any) -> ClusterSpiffeId:
    return ClusterSpiffeId.parse(cluster_spiffe_id("r", **{"spiffeIDTemplate": TEMPLATE, **spec}))


def test_a_pod_renders_to_its_entry_under_its_node_alias() -> None:
    billing = pod("billing-7d9f8b6c5-x2x7k", labels={"app": "billing", "tier": "backend"})
    uid = billing["metadata"]["uid"]

    entry = pod_entry(
        CLUSTER,
        resource(
            workloadSelectorTemplates=['k8s:pod-label:app:{{ index .PodMeta.Labels "app" }}'],
            dnsNameTemplates=["{{ .PodMeta.Labels.tier }}.{{ .PodMeta.Namespace }}.svc"],
            ttl="1h30m",
            jwtTtl=300,
            federatesWith=["partner.example"],
        ),
        billing,
    )

    assert entry.spiffe_id == "spiffe://acme.example/ns/payments/sa/billing"
    assert entry.parent_id == "spiffe://acme.example/k8s-node/prod-eu/worker-eu-1"
    assert entry.selectors == ("k8s:pod-label:app:billing", f"k8s:pod-uid:{uid}")
    assert entry.dns_names == ("backend.payments.svc",)
    assert (entry.x509_svid_ttl, entry.jwt_svid_ttl) == (5400, 300)
    assert entry.federates_with == ("partner.example",)


def test_a_missing_field_is_an_error_not_an_empty_string() -> None:
    billing = pod("billing-7d9f8b6c5-x2x7k")

    with pytest.raises(TemplateError):
        render("spiffe://x/{{ .PodMeta.Labels.missing }}", CLUSTER.context(billing))
    with pytest.raises(TemplateError):
        render('{{ index .PodMeta.Labels "missing" }}', CLUSTER.context(billing))
    with pytest.raises(TemplateError):
        render("{{ .PodMeta.Labels }}", CLUSTER.context(billing))  # a map is not a value

    # and the pod is left out (reported), not registered with a half-rendered ID
    rendering = desired_entries(
        CLUSTER,
        [resource(spiffeIDTemplate="spiffe://{{ .TrustDomain }}/{{ .PodMeta.Labels.nope }}")],
        [billing],
        {"payments": namespace("payments")},
    )
    assert rendering.entries == {}
    assert "no such field" in rendering.errors[0]


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {"app": "billing"}}, True),
        ({"matchLabels": {"app": "ledger"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend"]}]}, True),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["backend"]}]},
            False,
        ),
        ({"matchExpressions": [{"key": "gone", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"app": "billing"},
                "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}],
            },
            False,
        ),
    ],
)
def test_label_selectors_match_as_kubernetes_does(selector: Any, matches: bool) -> None:
    assert selector_matches(selector, {"app": "billing", "tier": "backend"}) is matches


@pytest.mark.parametrize(
    "spec",
    [
        {"spiffeIDTemplate": ""},
        {"spiffeIDTemplate": "spiffe://{{ .TrustDomain /x"},
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
        {"workloadSelectorTemplates": ["k8s-only"]},
        {"ttl": "an hour"},
        {"ttl": -5},
    ],
)
def test_a_malformed_resource_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(TemplateError):
        resource(**spec)


def test_durations_read_as_go_writes_them() -> None:
    assert duration_seconds("90m", name="ttl") == 5400
    assert duration_seconds("1h0m30s", name="ttl") == 3630
    assert duration_seconds(45, name="ttl") == 45
    assert duration_seconds(None, name="ttl") is None


def test_unscheduled_finished_and_unselected_pods_get_nothing() -> None:
    pods = [
        pod("a-1", node=""),
        pod("a-2", phase="Succeeded"),
        pod("a-3", phase="Failed"),
        pod("a-4", namespace="kube-system"),
        pod("a-5"),
    ]
    rendering = desired_entries(
        CLUSTER,
        [resource(namespaceSelector={"matchLabels": {"team": "payments"}})],
        pods,
        {
            "payments": namespace("payments", {"team": "payments"}),
            "kube-system": namespace("kube-system"),
        },
    )
    assert [e.source.rsplit("/", 1)[1] for e in rendering.entries.values()] == ["a-5"]


def test_the_plan_touches_only_the_registrars_entries_and_removes_duplicates() -> None:
    prefix = CLUSTER.parent_prefix()
    billing = pod("billing-1")
    wanted = desired_entries(CLUSTER, [resource()], [billing], {"payments": namespace("payments")})
    (entry,) = wanted.entries.values()
    stored = [
        {**entry.body(), "id": "1", "created_at": "1"},
        {**entry.body(), "id": "2", "created_at": "2"},  # a duplicate (older servers, races)
        {**entry.body(), "id": "3", "selectors": ["k8s:pod-uid:gone"]},  # a gone pod's
        {**entry.body(), "id": "4", "selectors": ["unix:uid:0"]},  # a node daemon's
        {**entry.body(), "id": "5", "parent_id": "spiffe://acme.example/k8s-node/us-1/n"},
    ]

    todo, unchanged = plan(wanted.entries, stored, prefix)

    assert prefix == "spiffe://acme.example/k8s-node/prod-eu/"
    assert sorted(e["id"] for e in todo.delete) == ["2", "3"]
    assert (todo.create, todo.update, unchanged) == ([], [], 1)
    assert [owned(e, prefix) for e in stored] == [True, True, True, False, False]
