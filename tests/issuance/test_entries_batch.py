"""/api/v1/entries/batch-create|update|delete: per-item results as the single calls, one
transaction, one audit row per entry, one push per call, agents' sync sees every change."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.exceptions import PermissionDenied as DrfPermissionDenied

from hallmark.errors import HallmarkError
from issuance import services
from issuance.models import Entry, EntryTombstone, RevisionCounter
from issuance.services.batch import MAX_BATCH_ITEMS, BatchPolicy
from tenants.models import AuditEvent
from tests.crosstenant import identifying_values, tenant_rows
from tests.issuance.agent_steps import attested
from tests.issuance.conftest import create_entry, entry_body
from tests.issuance.sync_mirror import EntryMirror, authorised_in_db
from tests.trustdomains.changes import ChangeListener

pytestmark = pytest.mark.django_db(transaction=True)


def batch(handle, operation, body):
    return handle.client.post(f"/api/v1/entries/batch-{operation}", body, format="json")


def results(handle, operation, body):
    response = batch(handle, operation, body)
    assert response.status_code == 200, response.content
    answer = response.json()["results"]
    return [r["status"]["code"] for r in answer], [r["entry"] for r in answer]


def stored(handle):
    with handle.schema():
        return {str(e.id): e for e in Entry.objects.all()}


def head_revision(handle):
    with handle.schema():
        return RevisionCounter.objects.get().head


# -- per-item results ----------------------------------------------------------------------------
def test_mixed_items_answer_in_order_with_the_codes_of_the_single_calls(tenant_a):
    # given good items and items each broken in another way
    td = tenant_a.trust_domain
    items = [
        entry_body(tenant_a, "/good-1"),
        entry_body(tenant_a, "/x", spiffe_id="spiffe://elsewhere.example/x"),
        entry_body(tenant_a, "/bad-selectors", selectors=["unix"]),
        entry_body(tenant_a, "/bad-ttl", x509_svid_ttl=-1),
        entry_body(tenant_a, "/wrong-types", selectors="unix:uid:1"),
        entry_body(tenant_a, "/reserved", dns_names=[td]),
        entry_body(tenant_a, "/platform-name", dns_names=["localhost"]),
        entry_body(tenant_a, "/good-2", selectors=["unix:uid:2", "unix:uid:1"]),
        {"spiffe_id": f"spiffe://{td}/unknown-field", "parent_id": "x", "bogus": 1},
    ]

    # when they are sent as one batch
    codes, entries = results(tenant_a, "create", {"entries": items})

    # then each bad item has exactly the code POST /entries answers for it, in order, and
    # only the good ones are stored (and answered as GET answers them)
    single = [
        tenant_a.client.post("/api/v1/entries", item, format="json").json().get("code")
        for item in items[1:-2] + items[-1:]
    ]
    assert codes == ["ok", *single[:-1], "ok", single[-1]]
    assert codes[1:7] == [
        "spiffe_id_outside_trust_domain",
        "invalid_selector",
        "invalid_ttl",
        "invalid_request",
        "reserved_dns_name",
        "dns_name_not_allowed",
    ]
    assert [e is None for e in entries] == [c != "ok" for c in codes]
    assert set(stored(tenant_a)) == {entries[0]["id"], entries[7]["id"]}
    assert entries[7]["selectors"] == ["unix:uid:1", "unix:uid:2"]
    for entry in (entries[0], entries[7]):
        assert tenant_a.client.get(f"/api/v1/entries/{entry['id']}").json() == entry


def test_update_items_answer_as_patch_would(tenant_a):
    # given two entries
    one, two = create_entry(tenant_a, "/one"), create_entry(tenant_a, "/two")

    # when a batch changes one, breaks a field of the other, and names ids that are not there
    codes, entries = results(
        tenant_a,
        "update",
        {
            "entries": [
                {"id": one["id"], "hint": "changed", "x509_svid_ttl": 600},
                {"id": two["id"], "spiffe_id": "spiffe://elsewhere.example/two"},
                {"id": "5c3e5b5e-0000-4000-8000-000000000000", "hint": "x"},
                {"id": "not-a-uuid", "hint": "x"},
                {"hint": "no id"},
                {"id": two["id"], "selectors": "unix:uid:1"},
            ]
        },
    )

    # then the codes are PATCH's, and only the good change is stored, with a new revision
    assert codes == [
        "ok",
        "spiffe_id_outside_trust_domain",
        "not_found",
        "not_found",
        "invalid_request",
        "invalid_request",
    ]
    assert entries[0]["hint"] == "changed" and entries[0]["x509_svid_ttl"] == 600
    assert entries[0]["revision"] > two["revision"]
    assert tenant_a.client.get(f"/api/v1/entries/{one['id']}").json() == entries[0]
    assert tenant_a.client.get(f"/api/v1/entries/{two['id']}").json() == two


def test_delete_items_answer_as_delete_would(tenant_a):
    one, two = create_entry(tenant_a, "/one"), create_entry(tenant_a, "/two")

    codes, entries = results(
        tenant_a, "delete", {"ids": [one["id"], "nope", 7, "5c3e5b5e-0000-4000-8000-000000000000"]}
    )

    assert codes == ["ok", "not_found", "invalid_request", "not_found"]
    assert entries[0] == one  # the entry as it was
    assert set(stored(tenant_a)) == {two["id"]}


def test_dns_name_policy_answers_as_the_single_calls_at_a_cost_independent_of_size(
    tenant_a, tenant_b
):
    # given DNS names that are fine, and names that speak for tenant B or the platform
    taken = [tenant_b.trust_domain], ["*." + tenant_b.trust_domain.split(".", 1)[1]], ["127.1"]
    refused = [entry_body(tenant_a, f"/refused{i}", dns_names=n) for i, n in enumerate(taken)]
    single = [
        tenant_a.client.post("/api/v1/entries", item, format="json").json()["code"]
        for item in refused
    ]

    def create(label, count):
        fine = [
            entry_body(tenant_a, f"/{label}{i}", dns_names=[f"{label}{i}.example.com"])
            for i in range(count)
        ]
        with CaptureQueriesContext(connection) as queries:
            codes, entries = results(tenant_a, "create", {"entries": [*refused, *fine]})
        return codes, entries, len(queries)

    def update(entries):
        with CaptureQueriesContext(connection) as queries:
            codes, _ = results(
                tenant_a, "update", {"entries": [{"id": e["id"], "hint": "h"} for e in entries]}
            )
        assert set(codes) == {"ok"}
        return len(queries)

    def delete(entries):
        with CaptureQueriesContext(connection) as queries:
            codes, _ = results(tenant_a, "delete", {"ids": [e["id"] for e in entries]})
        assert set(codes) == {"ok"}
        return len(queries)

    # when batches of 3 and of 60 such entries are created, changed and deleted
    small_codes, small, small_queries = create("small", 3)
    large_codes, large, large_queries = create("large", 60)

    # then the refusals are the single calls' codes, and the database is asked as often for
    # 60 entries as for 3 (lookups and writes are made once a call, not once an entry)
    assert single == ["dns_name_not_allowed", "reserved_dns_name", "dns_name_not_allowed"]
    assert small_codes == [*single, *["ok"] * 3]
    assert large_codes == [*single, *["ok"] * 60]
    assert small_queries == large_queries
    assert update(small[3:]) == update(large[3:])
    assert delete(small[3:]) == delete(large[3:])


# -- duplicates inside one batch -----------------------------------------------------------------
def test_duplicates_inside_a_batch_behave_as_calls_one_after_another(tenant_a):
    # given a stored entry
    existing = create_entry(tenant_a, "/stored", selectors=["unix:uid:1", "unix:gid:1"])

    # when a batch creates an entry twice (selectors in another order) and the stored one again
    codes, entries = results(
        tenant_a,
        "create",
        {
            "entries": [
                entry_body(tenant_a, "/twice", selectors=["unix:uid:1", "unix:gid:1"]),
                entry_body(tenant_a, "/twice", selectors=["unix:gid:1", "unix:uid:1"]),
                entry_body(tenant_a, "/stored", selectors=["unix:gid:1", "unix:uid:1"]),
            ]
        },
    )
    assert codes == ["ok", "entry_exists", "entry_exists"]
    assert set(stored(tenant_a)) == {existing["id"], entries[0]["id"]}

    # when a batch changes one entry twice, and moves the other onto the first
    twice = entries[0]
    codes, changed = results(
        tenant_a,
        "update",
        {
            "entries": [
                {"id": twice["id"], "hint": "first"},
                {"id": twice["id"], "x509_svid_ttl": 60},
                {"id": existing["id"], "spiffe_id": twice["spiffe_id"]},
            ]
        },
    )

    # then both changes apply in order, each with its own revision, and the move is refused
    assert codes == ["ok", "ok", "entry_exists"]
    assert changed[0]["hint"] == "first" and changed[0]["x509_svid_ttl"] == 3600
    assert changed[1]["hint"] == "first" and changed[1]["x509_svid_ttl"] == 60
    assert changed[1]["revision"] == changed[0]["revision"] + 1
    assert tenant_a.client.get(f"/api/v1/entries/{twice['id']}").json() == changed[1]
    assert tenant_a.client.get(f"/api/v1/entries/{existing['id']}").json() == existing

    # when a batch deletes one id twice, then the second is not found
    codes, _ = results(tenant_a, "delete", {"ids": [twice["id"], twice["id"]]})
    assert codes == ["ok", "not_found"]
    assert set(stored(tenant_a)) == {existing["id"]}


def test_an_entry_can_take_a_key_another_left_earlier_in_the_batch(tenant_a):
    one, two = create_entry(tenant_a, "/one"), create_entry(tenant_a, "/two")

    codes, _ = results(
        tenant_a,
        "update",
        {
            "entries": [
                {"id": one["id"], "spiffe_id": f"spiffe://{tenant_a.trust_domain}/three"},
                {"id": two["id"], "spiffe_id": one["spiffe_id"]},
            ]
        },
    )

    assert codes == ["ok", "ok"]
    assert sorted(e.spiffe_id.rsplit("/", 1)[1] for e in stored(tenant_a).values()) == [
        "one",
        "three",
    ]


# -- limits and malformed bodies ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("operation", "key", "item"),
    [
        ("create", "entries", lambda h, i: entry_body(h, f"/w{i}")),
        ("update", "entries", lambda h, i: {"id": "5c3e5b5e-0000-4000-8000-000000000000"}),
        ("delete", "ids", lambda h, i: "5c3e5b5e-0000-4000-8000-000000000000"),
    ],
)
def test_limits_and_malformed_bodies_are_refused_whole_with_a_code(tenant_a, operation, key, item):
    audit_before = AuditEvent.objects.count()
    over = [item(tenant_a, i) for i in range(MAX_BATCH_ITEMS + 1)]
    cases = [
        ({key: over}, "batch_too_large"),
        ({key: []}, "empty_batch"),
        ({}, "invalid_request"),
        ({key: item(tenant_a, 0), "more": 1}, "invalid_request"),
        ({key: "not a list"}, "invalid_request"),
        ([item(tenant_a, 0)], "invalid_request"),
    ]
    for body, code in cases:
        response = batch(tenant_a, operation, body)
        assert response.status_code == 400, (body, response.content[:300])
        assert response.json()["code"] == code
    assert stored(tenant_a) == {}
    assert AuditEvent.objects.count() == audit_before


def test_a_full_batch_of_the_maximum_is_stored(tenant_a):
    items = [entry_body(tenant_a, f"/w{i}") for i in range(MAX_BATCH_ITEMS)]
    codes, entries = results(tenant_a, "create", {"entries": items})
    assert codes == ["ok"] * MAX_BATCH_ITEMS
    assert len({e["revision"] for e in entries}) == MAX_BATCH_ITEMS
    assert len(stored(tenant_a)) == MAX_BATCH_ITEMS


# -- two tenants ------------------------------------------------------------------------------------
def test_another_tenants_ids_are_not_found_and_left_untouched(tenant_a, tenant_b):
    # given entries of B and one of A
    theirs = [create_entry(tenant_b, f"/b{i}") for i in range(2)]
    mine = create_entry(tenant_a, "/a")
    before = tenant_rows(tenant_b)
    markers = identifying_values(before)

    # when A's batches name B's ids (beside its own) and try to register in B's trust domain
    update = batch(
        tenant_a,
        "update",
        {"entries": [{"id": e["id"], "hint": "by-a"} for e in theirs] + [{"id": mine["id"]}]},
    )
    delete = batch(tenant_a, "delete", {"ids": [e["id"] for e in theirs]})
    create = batch(
        tenant_a,
        "create",
        {"entries": [{**entry_body(tenant_b, "/planted"), "selectors": ["unix:uid:0"]}]},
    )

    # then each of B's is that item's `not_found`, A's own item goes through, nothing of B's
    # shows in the answers and B is exactly as it was
    codes = {
        name: [r["status"]["code"] for r in answer.json()["results"]]
        for name, answer in (("update", update), ("delete", delete), ("create", create))
    }
    assert codes == {
        "update": ["not_found", "not_found", "ok"],
        "delete": ["not_found", "not_found"],
        "create": ["spiffe_id_outside_trust_domain"],
    }
    for answer in (update, delete, create):
        leaked = sorted(m for m in markers if m in answer.content.decode())
        assert not leaked
    assert tenant_rows(tenant_b) == before


# -- audit -------------------------------------------------------------------------------------------
def _audit_shape(event):
    return (event.action, event.actor, event.outcome, event.source, tuple(sorted(event.detail)))


def test_one_audit_row_per_entry_shaped_as_the_single_calls(tenant_a):
    # given the audit rows of one single create, update and delete
    single = create_entry(tenant_a, "/single")
    tenant_a.client.patch(f"/api/v1/entries/{single['id']}", {"hint": "h"}, format="json")
    tenant_a.client.delete(f"/api/v1/entries/{single['id']}")
    reference = {e.action: _audit_shape(e) for e in AuditEvent.objects.filter(target=single["id"])}

    # when three entries are created, changed and deleted in batches (one item bad each time)
    _, created = results(
        tenant_a,
        "create",
        {"entries": [entry_body(tenant_a, f"/w{i}") for i in range(3)] + [{"selectors": []}]},
    )
    ids = [e["id"] for e in created[:3]]
    results(tenant_a, "update", {"entries": [{"id": i, "hint": "h"} for i in ids] + [{}]})
    results(tenant_a, "delete", {"ids": [*ids, "missing"]})

    # then each entry has exactly one row per call, shaped as the single call's row
    for action in ("entry.create", "entry.update", "entry.delete"):
        rows = AuditEvent.objects.filter(tenant=tenant_a.tenant, action=action).exclude(
            target=single["id"]
        )
        assert sorted(r.target for r in rows) == sorted(ids), action
        assert {_audit_shape(r) for r in rows} == {reference[action]}
    update = AuditEvent.objects.filter(action="entry.update", target=ids[0]).get()
    assert update.detail["changed"] == ["hint"]


# -- one push per call -------------------------------------------------------------------------------
def test_each_call_publishes_exactly_one_change(tenant_a):
    listener = ChangeListener(tenant_a.tenant.id)
    try:
        _, created = results(
            tenant_a, "create", {"entries": [entry_body(tenant_a, f"/w{i}") for i in range(20)]}
        )
        after_create = listener.kinds(wait=1.0)
        ids = [e["id"] for e in created]
        results(tenant_a, "update", {"entries": [{"id": i, "hint": "h"} for i in ids]})
        after_update = listener.kinds(wait=1.0)
        results(tenant_a, "delete", {"ids": ids})
        after_delete = listener.kinds(wait=1.0)
        results(tenant_a, "delete", {"ids": ids})  # nothing left to delete: nothing changes
        after_nothing = listener.kinds(wait=1.0)
    finally:
        listener.close()

    assert (after_create, after_update, after_delete) == (["entries"], ["entries"], ["entries"])
    assert after_nothing == []


def test_a_batch_audits_its_refusals_and_its_entries_with_the_callers_address(tenant_a, tenant_b):
    # when a batch from one address holds a good item and one naming B's trust domain as a
    # DNS name (a refusal the single call audits)
    body = {
        "entries": [
            entry_body(tenant_a, "/good"),
            entry_body(tenant_a, "/bad", dns_names=[tenant_b.trust_domain]),
        ]
    }
    response = tenant_a.client.post(
        "/api/v1/entries/batch-create", body, format="json", REMOTE_ADDR="203.0.113.7"
    )
    codes = [r["status"]["code"] for r in response.json()["results"]]

    # then the refusal is in A's trail as the single call's would be, and so is the entry,
    # both from that address; B's trail holds nothing of it
    assert codes == ["ok", "dns_name_not_allowed"]
    trail = AuditEvent.objects.filter(action="entry.create")
    assert sorted((e.tenant_id, e.outcome, e.source) for e in trail) == [
        (tenant_a.tenant.id, "denied", "203.0.113.7"),
        (tenant_a.tenant.id, "success", "203.0.113.7"),
    ]
    assert trail.get(outcome="denied").detail["code"] == "dns_name_not_allowed"


def test_the_size_limit_holds_for_a_caller_of_the_service_too(tenant_a):
    # the REST view checks the size first; the service refuses on its own for other callers
    items = [entry_body(tenant_a, f"/w{i}") for i in range(MAX_BATCH_ITEMS + 1)]
    with tenant_a.schema(), pytest.raises(HallmarkError) as refused:
        services.batch_create_entries(tenant=tenant_a.tenant, actor="test", items=items)
    assert refused.value.code == "batch_too_large"
    assert stored(tenant_a) == {}


def test_a_chain_inside_a_batch_is_answered_with_the_revisions_stored(tenant_a):
    # when a batch creates a parent and, below it, a child
    parent = entry_body(tenant_a, "/parent")
    child = {**entry_body(tenant_a, "/child"), "parent_id": parent["spiffe_id"]}
    listener = ChangeListener(tenant_a.tenant.id)
    try:
        codes, created = results(tenant_a, "create", {"entries": [parent, child]})
        pushed = listener.bodies(1, wait=5.0)
    finally:
        listener.close()

    # then each answer names the revision its row holds, one revision each (the child's
    # roots, fixed after the rows are written, do not renumber it), and the push names the head
    assert codes == ["ok", "ok"]
    rows = stored(tenant_a)
    assert [e["revision"] for e in created] == [rows[e["id"]].revision for e in created]
    assert head_revision(tenant_a) == max(e["revision"] for e in created)
    assert [p["revision"] for p in pushed] == [head_revision(tenant_a)]
    assert rows[created[1]["id"]].roots


# -- agents' incremental sync ------------------------------------------------------------------------
def test_an_agents_incremental_sync_sees_every_batched_change(agent_api, tenant_a):
    # given an agent that synced two entries, and an entry under another parent
    identity, _, client = attested(agent_api, tenant_a)
    mine = identity.spiffe_id
    elsewhere = f"spiffe://{tenant_a.trust_domain}/spire/agent/join_token/other"
    kept = create_entry(tenant_a, "/kept", parent_id=mine)
    moving = create_entry(tenant_a, "/moving", parent_id=mine)
    arriving = create_entry(tenant_a, "/arriving", parent_id=elsewhere)
    mirror = EntryMirror(client)
    mirror.sync()

    # when batches create entries (one below another new one), change and re-parent
    _, created = results(
        tenant_a,
        "create",
        {
            "entries": [
                entry_body(tenant_a, "/new-1", parent_id=mine),
                entry_body(tenant_a, "/new-2", parent_id=f"spiffe://{tenant_a.trust_domain}/new-1"),
                entry_body(tenant_a, "/not-mine", parent_id=elsewhere),
            ]
        },
    )
    codes, _ = results(
        tenant_a,
        "update",
        {
            "entries": [
                {"id": kept["id"], "hint": "changed"},
                {"id": moving["id"], "parent_id": elsewhere},
                {"id": arriving["id"], "parent_id": mine},
            ]
        },
    )
    assert codes == ["ok", "ok", "ok"]
    changes = mirror.sync()

    # then the agent's next sync brings exactly what the database says it may hold
    new_1, new_2 = created[0]["id"], created[1]["id"]
    assert not changes[0].full
    assert set(mirror.entries) == {kept["id"], arriving["id"], new_1, new_2}
    assert mirror.entries[kept["id"]].hint == "changed"
    assert mirror.revisions() == authorised_in_db(tenant_a, identity.spiffe_id)

    # when a batch deletes the new entry the other new one hangs from
    results(tenant_a, "delete", {"ids": [new_1]})
    removals = mirror.sync()
    client.close()

    # then both leave the agent, incrementally
    assert not removals[0].full
    assert set(removals[0].removed_entry_ids) == {new_1, new_2}
    assert set(mirror.entries) == {kept["id"], arriving["id"]}
    assert mirror.revisions() == authorised_in_db(tenant_a, identity.spiffe_id)
    assert mirror.revision == head_revision(tenant_a)


# -- nothing half-written --------------------------------------------------------------------------------
@pytest.mark.parametrize("operation", ["create", "update", "delete"])
def test_a_failed_transaction_leaves_nothing_behind(tenant_a, monkeypatch, operation):
    # given two entries, and an audit trail that fails once the batch's writes are done
    entries = [create_entry(tenant_a, f"/w{i}") for i in range(2)]
    before, head = tenant_rows(tenant_a), head_revision(tenant_a)

    def broken(**kwargs):
        raise RuntimeError("the audit trail is down")

    monkeypatch.setattr("issuance.services.batch.record_audits", broken)
    body = {
        "create": {"entries": [entry_body(tenant_a, f"/new{i}") for i in range(3)]},
        "update": {"entries": [{"id": e["id"], "parent_id": e["spiffe_id"]} for e in entries]},
        "delete": {"ids": [e["id"] for e in entries]},
    }[operation]
    listener = ChangeListener(tenant_a.tenant.id)

    # when the batch runs
    try:
        with pytest.raises(RuntimeError):
            batch(tenant_a, operation, body)
        published = listener.kinds(wait=0.5)
    finally:
        listener.close()

    # then no entry, tombstone, revision or push came of it
    assert tenant_rows(tenant_a) == before
    assert head_revision(tenant_a) == head
    with tenant_a.schema():
        assert not EntryTombstone.objects.exists()
    assert published == []


# -- the hooks for roles and quotas ------------------------------------------------------------------------
class Refused(HallmarkError):
    code = "permission_denied"


def test_the_item_hook_refuses_items_alone_and_the_batch_hook_the_whole_call(tenant_a):
    def outside_prefix(action, before, after):
        entry = after or {"spiffe_id": before.spiffe_id}
        if not entry["spiffe_id"].startswith(f"spiffe://{tenant_a.trust_domain}/team/"):
            raise Refused("outside the token's spiffe_id_prefix")

    def over_quota(action, items):
        raise DrfPermissionDenied("quota_exceeded")

    items = [entry_body(tenant_a, "/team/a"), entry_body(tenant_a, "/other")]
    with tenant_a.schema():
        answer = services.batch_create_entries(
            tenant=tenant_a.tenant,
            actor="test",
            items=items,
            policy=BatchPolicy(authorize_item=outside_prefix),
        )
        assert [r.code for r in answer] == ["ok", "permission_denied"]
        with pytest.raises(DrfPermissionDenied):
            services.batch_create_entries(
                tenant=tenant_a.tenant,
                actor="test",
                items=[entry_body(tenant_a, "/team/b")],
                policy=BatchPolicy(admit_batch=over_quota),
            )
        assert sorted(e.spiffe_id for e in Entry.objects.all()) == [
            f"spiffe://{tenant_a.trust_domain}/team/a"
        ]
