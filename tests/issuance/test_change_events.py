"""Entry change events carry the revision they committed; malformed ones still wake agents."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from issuance.agentapi.watch import ChangeHub
from tenants.events import CHANNEL, ChangeEvent, _parse, publish_change
from tests.issuance.conftest import create_entry
from tests.trustdomains.changes import ChangeListener


@pytest.mark.parametrize(
    ("body", "revision"),
    [
        ({"kind": "entries", "at": 1.0, "revision": 12}, 12),
        ({"kind": "entries", "at": 1.0}, None),
        ({"kind": "entries", "at": 1.0, "revision": "12"}, None),
        ({"kind": "entries", "at": 1.0, "revision": -1}, None),
        ({"kind": "entries", "at": 1.0, "revision": True}, None),
    ],
)
def test_a_change_event_carries_a_revision_only_when_it_is_a_positive_number(body, revision):
    tenant_id = uuid.uuid4()
    event = _parse(CHANNEL.format(tenant_id=tenant_id).encode(), json.dumps(body).encode())

    # a malformed revision still wakes the agents (the listener then reads the head itself)
    assert event == ChangeEvent(tenant_id=tenant_id, kind="entries", at=1.0, revision=revision)


def test_only_an_entries_change_may_carry_a_revision():
    with pytest.raises(ValueError, match="only an entries change"):
        publish_change(tenant_id=uuid.uuid4(), kind="bundle", revision=3)


@pytest.mark.django_db(transaction=True)
def test_each_entry_write_announces_the_revision_it_committed(tenant_a, tenant_b):
    # given listeners on both tenants' change channels
    listener, other = ChangeListener(tenant_a.tenant.id), ChangeListener(tenant_b.tenant.id)
    try:
        # when an entry of A is created, changed and deleted
        entry = create_entry(tenant_a, "/announced")
        changed = tenant_a.client.patch(
            f"/api/v1/entries/{entry['id']}", {"hint": "h"}, format="json"
        ).json()
        assert tenant_a.client.delete(f"/api/v1/entries/{entry['id']}").status_code == 204
        bodies = listener.bodies(count=3, wait=10.0)
        elsewhere = other.bodies(count=1, wait=0.2)
    finally:
        listener.close()
        other.close()

    # then each event names the revision its transaction committed, in order, and B hears none
    from issuance import services

    with tenant_a.schema():
        head = services.current_revisions().head
    assert [b["kind"] for b in bodies] == ["entries"] * 3
    assert [b["revision"] for b in bodies] == [entry["revision"], changed["revision"], head]
    assert head > changed["revision"] > entry["revision"]
    assert elsewhere == []


def test_an_entries_event_carrying_its_revision_is_told_to_agents_without_a_read():
    async def scenario():
        async def publish(tenant_id):
            return None

        hub = ChangeHub(publish)
        a, b = uuid.uuid4(), uuid.uuid4()
        a_watcher, b_watcher = hub.subscribe(a), hub.subscribe(b)
        reads = {a: 0, b: 0}
        heads = {a: 7, b: 40}

        def reader(tenant):
            async def read():
                reads[tenant] += 1
                return (heads[tenant], 3)

            return read

        seen = [await hub.revisions(a, reader(a)), await hub.revisions(b, reader(b))]
        # when A's entries change and the event says at which revision
        hub.dispatch(ChangeEvent(tenant_id=a, kind="entries", at=time.time(), revision=9))
        woke = await a_watcher.wait(1.0)
        seen.append(await hub.revisions(a, reader(a)))
        # an older event arriving late does not take the head back
        hub.dispatch(ChangeEvent(tenant_id=a, kind="entries", at=time.time(), revision=8))
        seen.append(await hub.revisions(a, reader(a)))
        b_seen = await hub.revisions(b, reader(b))
        reads_with_revisions = dict(reads)
        # an event without a revision (or of another kind) still reads the head back
        heads[a] = 12
        hub.dispatch(ChangeEvent(tenant_id=a, kind="entries", at=time.time()))
        seen.append(await hub.revisions(a, reader(a)))
        hub.dispatch(ChangeEvent(tenant_id=a, kind="agents", at=time.time()))
        seen.append(await hub.revisions(a, reader(a)))
        hub.unsubscribe(a_watcher)
        hub.unsubscribe(b_watcher)
        return woke, seen, b_seen, reads_with_revisions, reads

    woke, seen, b_seen, reads_with_revisions, reads = asyncio.run(scenario())
    assert woke == {"entries"}
    assert seen[:4] == [(7, 3), (40, 3), (9, 3), (9, 3)]
    assert list(reads_with_revisions.values()) == [1, 1]  # the revision came with the event
    assert b_seen == (40, 3)  # another tenant's revision never shows in B's notices
    assert seen[4:] == [(12, 3), (12, 3)]
    assert list(reads.values()) == [3, 1]
