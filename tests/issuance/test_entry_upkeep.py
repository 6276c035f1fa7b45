"""The entry upkeep task: expiry turned into a removal, tombstones pruned past the horizon."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from issuance import services
from issuance.models import Entry, EntryTombstone
from issuance.tasks import entry_upkeep
from tests.issuance.conftest import create_entry

pytestmark = pytest.mark.django_db(transaction=True)


def test_upkeep_expires_entries_and_is_idempotent(tenant_a):
    # given an entry past its expiry, one below it, and one that is fine
    agent = f"spiffe://{tenant_a.trust_domain}/spire/agent/join_token/x"
    expired = create_entry(tenant_a, "/old", parent_id=agent)
    below = create_entry(tenant_a, "/below", parent_id=expired["spiffe_id"])
    fine = create_entry(tenant_a, "/fine", parent_id=agent)
    with tenant_a.schema():
        Entry.objects.filter(pk=expired["id"]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
        head = services.current_revisions().head

    # when upkeep runs twice
    first = entry_upkeep(str(tenant_a.tenant.id))
    second = entry_upkeep(str(tenant_a.tenant.id))

    # then the expired entry left its agent once, the one below it followed, the rest stayed
    assert first["expired"] == 1 and second["expired"] == 0
    with tenant_a.schema():
        rows = {str(e.id): e for e in Entry.objects.all()}
        tombstoned = sorted(str(t.entry_id) for t in EntryTombstone.objects.all())
        assert services.current_revisions().head > head
    assert rows[expired["id"]].expired and rows[expired["id"]].roots == []
    assert rows[below["id"]].roots == [expired["spiffe_id"]]
    assert rows[fine["id"]].roots == [agent] and rows[fine["id"]].revision == fine["revision"]
    assert tombstoned == sorted([expired["id"], below["id"]])


def test_upkeep_prunes_tombstones_past_the_horizon_and_records_it(tenant_a):
    # given a deleted entry whose tombstone is older than the horizon
    agent = f"spiffe://{tenant_a.trust_domain}/spire/agent/join_token/x"
    gone = create_entry(tenant_a, "/gone", parent_id=agent)
    assert tenant_a.client.delete(f"/api/v1/entries/{gone['id']}").status_code == 204
    with tenant_a.schema():
        EntryTombstone.objects.update(at=timezone.now() - dt.timedelta(hours=25))
        [tombstone] = EntryTombstone.objects.all()

    # when upkeep runs
    result = entry_upkeep(str(tenant_a.tenant.id))

    # then the tombstone is gone and the horizon is its revision
    assert result["pruned"] == 1
    with tenant_a.schema():
        assert not EntryTombstone.objects.exists()
        assert services.current_revisions().horizon == tombstone.revision
