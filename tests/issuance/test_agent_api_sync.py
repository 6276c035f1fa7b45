"""Incremental, paged SyncAuthorizedEntries over the real TLS agent API: exact deltas."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from django.utils import timezone

from issuance import services
from issuance.models import Entry
from tests.issuance.agent_steps import attested
from tests.issuance.conftest import create_entry
from tests.issuance.sync_mirror import EntryMirror, authorised_in_db

pytestmark = pytest.mark.django_db(transaction=True)


def _patch(handle, entry_id, **changes):
    response = handle.client.patch(f"/api/v1/entries/{entry_id}", changes, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def _delete(handle, entry_id):
    assert handle.client.delete(f"/api/v1/entries/{entry_id}").status_code == 204


def test_first_sync_is_full_and_the_next_brings_exactly_the_changes(agent_api, tenant_a):
    # given an agent that synced three entries
    identity, _, client = attested(agent_api, tenant_a)
    kept, changed, deleted = (
        create_entry(tenant_a, f"/w{i}", parent_id=identity.spiffe_id) for i in range(3)
    )
    mirror = EntryMirror(client)
    [first] = mirror.sync()
    assert first.full and not first.more
    assert set(mirror.entries) == {kept["id"], changed["id"], deleted["id"]}

    # when one entry is created, one changed and one deleted
    created = create_entry(tenant_a, "/new", parent_id=identity.spiffe_id)
    _patch(tenant_a, changed["id"], hint="changed")
    _delete(tenant_a, deleted["id"])
    [delta] = mirror.sync()
    client.close()

    # then the next sync brings exactly those, and the agent's set is the database's
    assert not delta.full and not delta.more
    assert sorted(e.id for e in delta.entries) == sorted([created["id"], changed["id"]])
    assert list(delta.removed_entry_ids) == [deleted["id"]]
    assert mirror.entries[changed["id"]].hint == "changed"
    assert mirror.revisions() == authorised_in_db(tenant_a, identity.spiffe_id)
    assert delta.revision > first.revision


def test_nothing_changed_answers_nothing_at_the_same_revision(agent_api, tenant_a):
    identity, _, client = attested(agent_api, tenant_a)
    create_entry(tenant_a, "/w", parent_id=identity.spiffe_id)
    mirror = EntryMirror(client)
    mirror.sync()
    [again] = mirror.sync()
    client.close()
    assert not again.full and not again.entries and not again.removed_entry_ids
    assert again.revision == mirror.revision


def test_reparenting_moves_an_entry_from_one_agent_to_another(agent_api, tenant_a):
    # given two agents, an entry under the first
    first, _, first_client = attested(agent_api, tenant_a)
    second, _, second_client = attested(agent_api, tenant_a)
    entry = create_entry(tenant_a, "/moving", parent_id=first.spiffe_id)
    first_mirror, second_mirror = EntryMirror(first_client), EntryMirror(second_client)
    first_mirror.sync()
    second_mirror.sync()
    assert set(first_mirror.entries) == {entry["id"]} and not second_mirror.entries

    # when it is re-parented to the second agent
    _patch(tenant_a, entry["id"], parent_id=second.spiffe_id)
    [away] = first_mirror.sync()
    [arrived] = second_mirror.sync()

    # then the first agent is told it is gone, the second gets it
    assert list(away.removed_entry_ids) == [entry["id"]] and not away.entries
    assert [e.id for e in arrived.entries] == [entry["id"]] and not arrived.removed_entry_ids
    assert arrived.entries[0].parent_id == second.spiffe_id

    # and moving it back reverses both
    _patch(tenant_a, entry["id"], parent_id=first.spiffe_id)
    [back] = first_mirror.sync()
    [gone] = second_mirror.sync()
    first_client.close()
    second_client.close()
    assert [e.id for e in back.entries] == [entry["id"]]
    assert list(gone.removed_entry_ids) == [entry["id"]]


def test_entries_below_an_entry_follow_it_in_and_out(agent_api, tenant_a):
    # given an agent, and workloads registered under a node entry that does not exist yet
    identity, _, client = attested(agent_api, tenant_a)
    node = f"spiffe://{tenant_a.trust_domain}/node/east"
    below = [create_entry(tenant_a, f"/east/{i}", parent_id=node) for i in range(3)]
    unrelated = create_entry(tenant_a, "/direct", parent_id=identity.spiffe_id)
    mirror = EntryMirror(client)
    mirror.sync()
    assert set(mirror.entries) == {unrelated["id"]}

    # when the node entry is registered under the agent
    node_entry = create_entry(tenant_a, "/node/east", parent_id=identity.spiffe_id)
    [arrived] = mirror.sync()

    # then the node entry and everything below it arrive, and nothing else
    assert sorted(e.id for e in arrived.entries) == sorted(
        [node_entry["id"], *(b["id"] for b in below)]
    )

    # when the node entry gets another SPIFFE ID, the entries below it are removed
    _patch(tenant_a, node_entry["id"], spiffe_id=f"spiffe://{tenant_a.trust_domain}/node/west")
    [renamed] = mirror.sync()
    assert [e.id for e in renamed.entries] == [node_entry["id"]]
    assert sorted(renamed.removed_entry_ids) == sorted(b["id"] for b in below)

    # and deleting it removes it too
    _delete(tenant_a, node_entry["id"])
    [deleted] = mirror.sync()
    client.close()
    assert list(deleted.removed_entry_ids) == [node_entry["id"]] and not deleted.entries
    assert mirror.revisions() == authorised_in_db(tenant_a, identity.spiffe_id)


def test_an_entry_that_expires_is_removed_from_its_agent(agent_api, tenant_a):
    # given a synced agent with an entry that then passes its expiry
    identity, _, client = attested(agent_api, tenant_a)
    expiring = create_entry(tenant_a, "/expiring", parent_id=identity.spiffe_id)
    create_entry(tenant_a, "/below-expiring", parent_id=expiring["spiffe_id"])
    mirror = EntryMirror(client)
    mirror.sync()
    assert len(mirror.entries) == 2
    with tenant_a.schema():
        Entry.objects.filter(pk=expiring["id"]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )

    # when it syncs
    [delta] = mirror.sync()
    client.close()

    # then the expired entry and the one below it are removed
    assert len(delta.removed_entry_ids) == 2 and not delta.entries
    assert mirror.entries == {}
    assert authorised_in_db(tenant_a, identity.spiffe_id) == {}


def test_pages_come_in_revision_order_with_more_until_the_last(agent_api, tenant_a):
    # given 25 entries
    identity, _, client = attested(agent_api, tenant_a)
    created = [create_entry(tenant_a, f"/p{i}", parent_id=identity.spiffe_id) for i in range(25)]

    # when the agent syncs 10 a page
    mirror = EntryMirror(client)
    pages = mirror.sync(page_size=10)
    client.close()

    # then three pages, in revision order, `more` on all but the last, nothing twice
    assert [len(p.entries) for p in pages] == [10, 10, 5]
    assert [p.more for p in pages] == [True, True, False]
    assert [p.full for p in pages] == [True, False, False]
    revisions = [e.revision for p in pages for e in p.entries]
    assert revisions == sorted(revisions) and len(set(revisions)) == 25
    assert pages[0].revision == revisions[9] and pages[1].revision == revisions[19]
    assert set(mirror.entries) == {c["id"] for c in created}


def test_page_size_is_clamped_and_a_negative_one_refused(agent_api, tenant_a):
    identity, _, client = attested(agent_api, tenant_a)
    create_entry(tenant_a, "/w", parent_id=identity.spiffe_id)
    assert len(client.sync(0, 1_000_000).entries) == 1
    with pytest.raises(grpc.RpcError) as failure:
        client.sync(0, -1)
    client.close()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith("invalid_page_size:")


def test_an_agent_behind_the_removal_history_gets_a_full_sync(agent_api, tenant_a):
    # given a synced agent, then changes whose tombstones are pruned
    identity, _, client = attested(agent_api, tenant_a)
    entries = [create_entry(tenant_a, f"/h{i}", parent_id=identity.spiffe_id) for i in range(6)]
    mirror = EntryMirror(client)
    mirror.sync()
    for entry in entries[:3]:
        _delete(tenant_a, entry["id"])
    create_entry(tenant_a, "/after", parent_id=identity.spiffe_id)
    with tenant_a.schema():
        assert services.prune_tombstones(older_than=dt.timedelta(0)) == 3
    stale_since = mirror.revision

    # when it syncs from its old revision, two entries a page
    pages = mirror.sync(page_size=2)
    client.close()

    # then the first page says full, the following pages continue (never full again),
    # and the set is the database's
    assert pages[0].full and not any(p.full for p in pages[1:])
    assert len(pages) == 2 and stale_since < pages[-1].revision
    assert mirror.revisions() == authorised_in_db(tenant_a, identity.spiffe_id)


def test_a_revision_from_another_agent_gets_a_full_sync(agent_api, tenant_a):
    # given an agent at some revision, and a new agent that presents that revision
    first, _, first_client = attested(agent_api, tenant_a)
    create_entry(tenant_a, "/first", parent_id=first.spiffe_id)
    revision = first_client.sync().revision
    first_client.close()
    second, _, second_client = attested(agent_api, tenant_a)
    mine = create_entry(tenant_a, "/second", parent_id=second.spiffe_id)

    # when the new agent syncs "since" it
    page = second_client.sync(revision)
    second_client.close()

    # then it is told to replace its set, and gets its own entry
    assert page.full and [e.id for e in page.entries] == [mine["id"]]


def test_other_tenants_changes_never_reach_an_agent(agent_api, tenant_a, tenant_b):
    # given an agent of A synced, and B writing entries under the same agent path
    identity, token, client = attested(agent_api, tenant_a)
    mirror = EntryMirror(client)
    mirror.sync()
    agent_path = f"/spire/agent/join_token/{token['id']}"
    theirs = create_entry(
        tenant_b, "/theirs", parent_id=f"spiffe://{tenant_b.trust_domain}{agent_path}"
    )
    _patch(tenant_b, theirs["id"], hint="x")
    _delete(tenant_b, theirs["id"])

    # when A's agent syncs, from scratch and incrementally
    [delta] = mirror.sync()
    everything = client.sync(0)
    client.close()

    # then none of B's entries or removals show up
    assert not delta.entries and not delta.removed_entry_ids
    assert not everything.entries


def test_an_entry_is_stored_with_the_roots_of_its_whole_chain(agent_api, tenant_a):
    # given an agent, and a chain of entries registered top down below it, the last of them
    # (its SPIFFE ID) already the parent of an entry registered before it
    identity, _, client = attested(agent_api, tenant_a)
    td = tenant_a.trust_domain
    waiting = create_entry(tenant_a, "/under-c", parent_id=f"spiffe://{td}/c")
    a = create_entry(tenant_a, "/a", parent_id=identity.spiffe_id)
    b = create_entry(tenant_a, "/b", parent_id=a["spiffe_id"])
    c = create_entry(tenant_a, "/c", parent_id=b["spiffe_id"])

    # then each is stored with every SPIFFE ID above it, the one that waited too
    with tenant_a.schema():
        roots = {str(e.id): sorted(e.roots) for e in Entry.objects.all()}
    assert roots[c["id"]] == sorted([identity.spiffe_id, a["spiffe_id"], b["spiffe_id"]])
    assert roots[waiting["id"]] == sorted(
        [identity.spiffe_id, a["spiffe_id"], b["spiffe_id"], c["spiffe_id"]]
    )
    # and the agent gets all four
    mirror = EntryMirror(client)
    mirror.sync()
    client.close()
    assert set(mirror.entries) == {a["id"], b["id"], c["id"], waiting["id"]}
