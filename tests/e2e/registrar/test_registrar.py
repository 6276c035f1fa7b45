"""hallmark-registrar against the fake Kubernetes API and the session's real `hallmark up`.

The registrar reads the cluster over HTTPS (list + chunked watch, bearer token, the cluster
CA from a kubeconfig) and writes entries through the plane's batch API with a registrar
token scoped to `spiffe://<td>/ns/`. Each test watches the plane's entries, not the
registrar's insides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from registrar.controller import Registrar
from tests.e2e.registrar.conftest import (
    SPIFFE_ID_TEMPLATE,
    Tenant,
    make_tenant,
    running_registrar,
    wait_until,
)
from tests.registrar.fake_kube_api import (
    CLUSTER_SPIFFE_IDS,
    NAMESPACES,
    PODS,
    FakeKubeApi,
    cluster_spiffe_id,
    fake_kube_api,
    namespace,
    pod,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def default_identity() -> dict[str, Any]:
    return cluster_spiffe_id(
        "default",
        spiffeIDTemplate=SPIFFE_ID_TEMPLATE,
        namespaceSelector={
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system"],
                }
            ]
        },
        podSelector={"matchExpressions": [{"key": "spiffe.io/skip", "operator": "DoesNotExist"}]},
        workloadSelectorTemplates=[
            "k8s:ns:{{ .PodMeta.Namespace }}",
            "k8s:sa:{{ .PodSpec.ServiceAccountName }}",
        ],
        dnsNameTemplates=["{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc.{{ .ClusterDomain }}"],
        ttl="1h",
    )


@pytest.fixture(scope="module")
def world(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two tenants; the fake cluster with namespaces and the `default` ClusterSPIFFEID."""
    work = tmp_path_factory.mktemp("registrar")
    tenant = make_tenant(control_plane, "regk8s")
    other = make_tenant(control_plane, "regother")
    with fake_kube_api(work / "pki") as kube:
        kube.add(NAMESPACES, namespace("payments", {"team": "payments"}))
        kube.add(NAMESPACES, namespace("kube-system"))
        kube.add(NAMESPACES, namespace("web", {"team": "web"}))
        identity = kube.add(CLUSTER_SPIFFE_IDS, default_identity())
        yield {"kube": kube, "tenant": tenant, "other": other, "work": work, "identity": identity}


@pytest.fixture(scope="module")
def registrar(world: dict[str, Any]) -> Iterator[Registrar]:
    with running_registrar(world["kube"], world["tenant"], world["work"]) as running:
        yield running


def by_selector(tenant: Tenant, selector: str) -> list[dict[str, Any]]:
    return [e for e in tenant.entries() if selector in e["selectors"]]


def spiffe_ids(tenant: Tenant, uid: str) -> list[str]:
    return [e["spiffe_id"] for e in by_selector(tenant, f"k8s:pod-uid:{uid}")]


def has_only(tenant: Tenant, uid: str, wanted: list[str]) -> bool:
    return spiffe_ids(tenant, uid) == wanted


def entry_of(tenant: Tenant, uid: str, count: int = 1) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = wait_until(
        lambda: (
            (found := by_selector(tenant, f"k8s:pod-uid:{uid}")) and len(found) == count and found
        ),
        f"{count} entries for pod {uid}",
    )
    return found


def gone(tenant: Tenant, uid: str) -> None:
    wait_until(lambda: not by_selector(tenant, f"k8s:pod-uid:{uid}"), f"pod {uid}'s entry gone")


def test_a_new_pod_gets_its_entry_and_loses_it_when_deleted(
    world: dict[str, Any], registrar: Registrar
) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]

    # when a pod is scheduled
    billing = kube.add(PODS, pod("billing-7d9f8b6c5-x2x7k"))
    uid = billing["metadata"]["uid"]

    # then its entry appears, rendered from the ClusterSPIFFEID, under its node's alias
    (entry,) = entry_of(tenant, uid)
    td = tenant.trust_domain
    assert entry["spiffe_id"] == f"spiffe://{td}/ns/payments/sa/billing"
    assert entry["parent_id"] == tenant.node_alias("worker-eu-1")
    assert sorted(entry["selectors"]) == sorted(
        ["k8s:ns:payments", "k8s:sa:billing", f"k8s:pod-uid:{uid}"]
    )
    assert entry["dns_names"] == ["billing-7d9f8b6c5-x2x7k.payments.svc.cluster.local"]
    assert entry["x509_svid_ttl"] == 3600

    # when the pod is deleted, its entry goes
    kube.delete(PODS, billing)
    gone(tenant, uid)


def test_pods_the_selectors_do_not_pick_get_no_entry(
    world: dict[str, Any], registrar: Registrar
) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    skipped = [
        kube.add(
            PODS,
            pod("coredns-5d78c9869d-7bq4w", namespace="kube-system", service_account="coredns"),
        ),
        kube.add(PODS, pod("billing-7d9f8b6c5-skip1", labels={"spiffe.io/skip": "true"})),
        kube.add(PODS, pod("billing-7d9f8b6c5-pend1", node="")),
        kube.add(PODS, pod("migrate-28374-done1", phase="Succeeded")),
    ]
    marker = kube.add(PODS, pod("web-5f6d7c8b9-marker", namespace="web", service_account="web"))

    entry_of(tenant, marker["metadata"]["uid"])  # the registrar has seen all five

    for skipped_pod in skipped:
        assert not by_selector(tenant, f"k8s:pod-uid:{skipped_pod['metadata']['uid']}")
    kube.delete(PODS, marker)
    for skipped_pod in skipped:
        kube.delete(PODS, skipped_pod)


def test_a_pod_that_is_scheduled_later_gets_its_entry_then(
    world: dict[str, Any], registrar: Registrar
) -> None:
    kube: FakeKubeApi = world["kube"]
    pending = kube.add(PODS, pod("billing-7d9f8b6c5-late1", node=""))
    scheduled = kube.get(PODS, pending["metadata"]["uid"])
    scheduled["spec"]["nodeName"] = "worker-eu-2"

    kube.modify(PODS, scheduled)

    (entry,) = entry_of(world["tenant"], pending["metadata"]["uid"])
    assert entry["parent_id"] == world["tenant"].node_alias("worker-eu-2")
    kube.delete(PODS, scheduled)
    gone(world["tenant"], pending["metadata"]["uid"])


def test_a_template_change_updates_the_entries_in_place_or_replaces_them(
    world: dict[str, Any], registrar: Registrar
) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    pods = [
        kube.add(PODS, pod(f"ledger-6c8d9e7f5-t{i}", service_account="ledger")) for i in range(3)
    ]
    uids = [p["metadata"]["uid"] for p in pods]
    before = {uid: entry_of(tenant, uid)[0] for uid in uids}
    identity = kube.get(CLUSTER_SPIFFE_IDS, world["identity"]["metadata"]["uid"])

    try:
        # when fields that are not the entry's identity change: the same entries, updated
        identity["spec"]["hint"] = "internal"
        identity["spec"]["ttl"] = "30m"
        kube.modify(CLUSTER_SPIFFE_IDS, identity)

        def updated(uid: str) -> list[dict[str, Any]]:
            return [
                e
                for e in by_selector(tenant, f"k8s:pod-uid:{uid}")
                if e["hint"] == "internal" and e["x509_svid_ttl"] == 1800
            ]

        after = {uid: wait_until(partial(updated, uid), "the hint and ttl")[0] for uid in uids}
        for uid in uids:
            assert after[uid]["id"] == before[uid]["id"]
            assert after[uid]["revision"] > before[uid]["revision"]

        # when the SPIFFE ID template changes: each pod's entry is replaced, none is left over
        identity["spec"]["spiffeIDTemplate"] = (
            "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/pod/{{ .PodMeta.Name }}"
        )
        kube.modify(CLUSTER_SPIFFE_IDS, identity)
        for p in pods:
            uid, name = p["metadata"]["uid"], p["metadata"]["name"]
            wanted = [f"spiffe://{tenant.trust_domain}/ns/payments/pod/{name}"]
            wait_until(partial(has_only, tenant, uid, wanted), "the new ID")
    finally:
        kube.modify(CLUSTER_SPIFFE_IDS, {**identity, "spec": default_identity()["spec"]})
    for p in pods:
        kube.delete(PODS, p)
    for uid in uids:
        gone(tenant, uid)


def test_two_identities_giving_a_pod_the_same_entry_make_one_entry(
    world: dict[str, Any], registrar: Registrar
) -> None:
    kube: FakeKubeApi = world["kube"]
    twin = kube.add(
        CLUSTER_SPIFFE_IDS,
        {
            **default_identity(),
            "metadata": {**default_identity()["metadata"], "name": "payments-copy"},
        },
    )
    extra = kube.add(
        CLUSTER_SPIFFE_IDS,
        cluster_spiffe_id(
            "payments-by-pod",
            spiffeIDTemplate='spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/app/{{ index .PodMeta.Labels "app" }}',
            namespaceSelector={"matchLabels": {"team": "payments"}},
        ),
    )
    try:
        billing = kube.add(PODS, pod("billing-7d9f8b6c5-twin1"))
        entries = entry_of(world["tenant"], billing["metadata"]["uid"], count=2)
        assert sorted(e["spiffe_id"].rsplit("/", 2)[-2] for e in entries) == ["app", "sa"]
    finally:
        kube.delete(CLUSTER_SPIFFE_IDS, twin)
        kube.delete(CLUSTER_SPIFFE_IDS, extra)
    entry_of(world["tenant"], billing["metadata"]["uid"], count=1)
    kube.delete(PODS, billing)
    gone(world["tenant"], billing["metadata"]["uid"])


def test_relabelling_a_namespace_adds_and_removes_its_pods_entries(
    world: dict[str, Any], registrar: Registrar
) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    # given an identity for the pods of namespaces labelled mesh=on, and a pod in "web"
    meshed = kube.add(
        CLUSTER_SPIFFE_IDS,
        cluster_spiffe_id(
            "mesh",
            spiffeIDTemplate="spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/mesh",
            namespaceSelector={"matchLabels": {"mesh": "on"}},
        ),
    )
    web = kube.add(PODS, pod("web-5f6d7c8b9-mesh1", namespace="web", service_account="web"))
    uid = web["metadata"]["uid"]
    entry_of(tenant, uid)  # the default identity's entry only
    namespace_uid = next(
        u for u, n in kube.objects[NAMESPACES].items() if n["metadata"]["name"] == "web"
    )
    try:
        # when the namespace gets the label, its pod gets the mesh identity too
        labelled = kube.get(NAMESPACES, namespace_uid)
        labelled["metadata"]["labels"]["mesh"] = "on"
        kube.modify(NAMESPACES, labelled)
        mesh_id = f"spiffe://{tenant.trust_domain}/ns/web/mesh"
        assert mesh_id in [e["spiffe_id"] for e in entry_of(tenant, uid, count=2)]

        # and when the label goes, that entry goes
        del labelled["metadata"]["labels"]["mesh"]
        kube.modify(NAMESPACES, labelled)
        (left,) = entry_of(tenant, uid, count=1)
        assert left["spiffe_id"] != mesh_id
    finally:
        kube.delete(CLUSTER_SPIFFE_IDS, meshed)
    kube.delete(PODS, web)
    gone(tenant, uid)


def test_entries_it_did_not_make_are_never_touched(
    world: dict[str, Any], registrar: Registrar
) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    other: Tenant = world["other"]
    td = tenant.trust_domain
    foreign = [
        # a node daemon under the registrar's own node alias, without a pod-uid selector
        tenant.create(
            spiffe_id=f"spiffe://{td}/ns/node/logs",
            parent_id=tenant.node_alias(),
            selectors=["unix:uid:0"],
        ),
        # a pod-uid entry under another parent (made by hand or another cluster's registrar)
        tenant.create(
            spiffe_id=f"spiffe://{td}/ns/payments/sa/billing",
            parent_id=f"spiffe://{td}/k8s-node/us-prod/worker-us-1",
            selectors=["k8s:pod-uid:0b7c3f2e-0000-4c5e-8f6a-2d4b6c8e0f1a"],
        ),
        # a pod-uid entry under a node alias someone made by hand for a node of this cluster
        tenant.create(
            spiffe_id=f"spiffe://{td}/ns/payments/sa/billing",
            parent_id=f"spiffe://{td}/node/worker-eu-1",
            selectors=["k8s:pod-uid:9d1c0000-1b2c-4d3e-8f4a-5b6c7d8e9f00"],
        ),
        # an entry outside the registrar's SPIFFE-ID prefix, under its node alias
        tenant.create(
            spiffe_id=f"spiffe://{td}/batch/nightly",
            parent_id=tenant.node_alias(),
            selectors=["k8s:ns:batch", "k8s:sa:nightly"],
        ),
    ]
    # and in another tenant, an entry shaped exactly like the registrar's own
    theirs = other.create(
        spiffe_id=f"spiffe://{other.trust_domain}/ns/payments/sa/billing",
        parent_id=other.node_alias(),
        selectors=["k8s:pod-uid:5e7a-none"],
    )

    # when the registrar reconciles again (a pod comes and goes) and resyncs fully
    marker = kube.add(PODS, pod("billing-7d9f8b6c5-fgn01"))
    entry_of(tenant, marker["metadata"]["uid"])
    kube.delete(PODS, marker)
    gone(tenant, marker["metadata"]["uid"])
    registrar.reconcile_once()

    # then every foreign entry is there, unchanged, and the registrar never tried them
    assert not [f for f in registrar.failures if "nightly" in f or "/node/worker" in f]
    stored = {e["id"]: e for e in tenant.entries()}
    for entry in foreign:
        assert stored[entry["id"]]["revision"] == entry["revision"]
        assert stored[entry["id"]]["updated_at"] == entry["updated_at"]
    assert [e["revision"] for e in other.entries() if e["id"] == theirs["id"]] == [
        theirs["revision"]
    ]


def test_a_prefix_scoped_token_cannot_write_outside_its_prefix(
    world: dict[str, Any], registrar: Registrar, caplog: pytest.LogCaptureFixture
) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    caplog.set_level(logging.WARNING, logger="hallmark.registrar")
    # a resource that would mint identities outside spiffe://<td>/ns/
    evil = kube.add(
        CLUSTER_SPIFFE_IDS,
        cluster_spiffe_id(
            "admin-claim",
            spiffeIDTemplate="spiffe://{{ .TrustDomain }}/admin/{{ .PodMeta.Name }}",
            podSelector={"matchLabels": {"app": "ledger"}},
        ),
    )
    try:
        ledger = kube.add(PODS, pod("ledger-6c8d9e7f5-evil1", service_account="ledger"))
        uid = ledger["metadata"]["uid"]

        # then the pod's entry inside the prefix is made; the one outside is refused alone
        (entry,) = entry_of(tenant, uid)
        assert entry["spiffe_id"].endswith("/ns/payments/sa/ledger")
        refusal = wait_until(
            lambda: [f for f in registrar.failures if "/admin/ledger-6c8d9e7f5-evil1" in f],
            "the refusal",
        )
        assert "permission_denied" in refusal[0]
        assert any(
            "permission_denied" in r.getMessage() and "/admin/ledger" in r.getMessage()
            for r in caplog.records
        )
        assert not [e for e in tenant.entries() if "/admin/" in e["spiffe_id"]]
    finally:
        kube.delete(CLUSTER_SPIFFE_IDS, evil)
    kube.delete(PODS, ledger)
    gone(tenant, uid)


def test_a_restart_makes_no_duplicates_and_catches_up_with_what_it_missed(
    world: dict[str, Any], registrar: Registrar
) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    stays = [
        kube.add(PODS, pod(f"web-5f6d7c8b9-rs{i}", namespace="web", service_account="web"))
        for i in range(3)
    ]
    leaves = kube.add(PODS, pod("web-5f6d7c8b9-rsgone", namespace="web", service_account="web"))
    for p in stays:
        entry_of(tenant, p["metadata"]["uid"])
    (left,) = entry_of(tenant, leaves["metadata"]["uid"])
    before = {e["id"] for e in tenant.entries()}

    # when the registrar stops, a pod goes and another comes while nobody watches, and a
    # new registrar process starts over the same cluster
    registrar.stop()
    kube.delete(PODS, leaves)
    came = kube.add(PODS, pod("web-5f6d7c8b9-rsnew", namespace="web", service_account="web"))
    with running_registrar(kube, tenant, world["work"] / "second") as second:
        (new,) = entry_of(tenant, came["metadata"]["uid"])
        gone(tenant, leaves["metadata"]["uid"])
        second.reconcile_once()
        after = tenant.entries()
        assert second.last is not None and second.last.created == second.last.deleted == 0

    # then the entries that were right are the very same entries, and no key is there twice
    assert {e["id"] for e in after} == (before - {left["id"]}) | {new["id"]}
    keys = [(e["spiffe_id"], e["parent_id"], tuple(sorted(e["selectors"]))) for e in after]
    assert len(keys) == len(set(keys))
    for p in [*stays, came]:
        kube.delete(PODS, p)


def test_a_missed_watch_event_and_a_hand_deleted_entry_are_fixed_by_the_resync(
    world: dict[str, Any],
) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    with running_registrar(kube, tenant, world["work"] / "resync", resync=0.5) as registrar:
        lost = kube.add(PODS, pod("billing-7d9f8b6c5-miss1"))
        kept = kube.add(PODS, pod("billing-7d9f8b6c5-miss2"))
        entry_of(tenant, lost["metadata"]["uid"])
        (mine,) = entry_of(tenant, kept["metadata"]["uid"])

        # when a pod goes without the watch ever telling (no DELETED event) ...
        kube.forget(PODS, lost)
        # ... and someone deletes one of the registrar's entries by hand
        deleted = tenant.plane.call(tenant.owner, "DELETE", f"entries/{mine['id']}")
        assert deleted.status_code == 204, deleted.text

        # then the periodic resync lists the cluster again and puts both right
        gone(tenant, lost["metadata"]["uid"])
        (again,) = entry_of(tenant, kept["metadata"]["uid"])
        assert again["id"] != mine["id"]
        assert registrar.informers["pods"].lists > 1
        kube.delete(PODS, kept)
        gone(tenant, kept["metadata"]["uid"])


def test_a_watch_answered_410_gone_lists_again(world: dict[str, Any]) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    with running_registrar(kube, tenant, world["work"] / "gone") as registrar:
        pods = registrar.informers["pods"]
        lists = pods.lists
        stale = pods.resource_version

        # when the API server compacts its history past the registrar's version and drops
        # the watches (as after an etcd compaction or an API server restart), then a pod comes
        added = kube.plant(PODS, pod("billing-7d9f8b6c5-gone1"))  # no event: only a list has it
        kube.compact()
        kube.drop_watches()

        # then the watch from the old version is refused with 410, and the list finds the pod
        entry_of(tenant, added["metadata"]["uid"])
        assert pods.lists > lists
        assert int(stale) < kube.compacted
        assert any(int(v or 0) < kube.compacted for v in kube.watches_from(PODS))
        kube.delete(PODS, added)
        gone(tenant, added["metadata"]["uid"])


def test_watches_carry_bookmarks_and_resume_from_them(world: dict[str, Any]) -> None:
    kube: FakeKubeApi = world["kube"]
    tenant: Tenant = world["tenant"]
    with running_registrar(kube, tenant, world["work"] / "bookmarks") as registrar:
        namespaces = registrar.informers["namespaces"]
        listed_at = int(namespaces.resource_version)
        kube.add(PODS, pod("billing-7d9f8b6c5-bkmk1"))  # moves the cluster's version on

        # a BOOKMARK moves the namespaces watch past versions it had no event for
        wait_until(lambda: int(namespaces.resource_version) > listed_at, "a bookmark")
        kube.drop_watches()
        wait_until(
            lambda: any(int(v or 0) > listed_at for v in kube.watches_from(NAMESPACES)),
            "a watch resumed from the bookmark's version",
        )
        assert namespaces.lists == 1
        for p in list(kube.objects[PODS].values()):
            kube.delete(PODS, p)
