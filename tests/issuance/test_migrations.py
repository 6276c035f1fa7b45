"""Migration 0002 numbers entries that predate revisions and gives them their roots."""

from __future__ import annotations

import datetime as dt
import importlib

import pytest
from django.apps import apps
from django.db.models import F
from django.utils import timezone

from issuance.models import Entry, RevisionCounter
from tests.issuance.conftest import create_entry

pytestmark = pytest.mark.django_db(transaction=True)
migration = importlib.import_module("issuance.migrations.0002_incremental_sync")


def test_existing_entries_get_revisions_in_creation_order_and_their_roots(tenant_a):
    # given entries as round 1 left them: no roots, no counter, one expired
    td = tenant_a.trust_domain
    agent = f"spiffe://{td}/spire/agent/join_token/x"
    node = create_entry(tenant_a, "/node", parent_id=agent)
    below = create_entry(tenant_a, "/below", parent_id=node["spiffe_id"])
    old = create_entry(tenant_a, "/old", parent_id=agent)
    with tenant_a.schema():
        Entry.objects.update(roots=[], revision=-F("revision"))
        Entry.objects.filter(pk=old["id"]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
        RevisionCounter.objects.all().delete()

        # when the migration's data step runs
        migration.number_entries(apps, None)

        # then revisions follow creation order, roots follow the chain, expiry is noticed
        rows = {str(e.id): e for e in Entry.objects.all()}
        assert [rows[e["id"]].revision for e in (node, below, old)] == [1, 2, 3]
        assert rows[node["id"]].roots == [agent]
        assert rows[below["id"]].roots == sorted([node["spiffe_id"], agent])
        assert rows[old["id"]].expired and rows[old["id"]].roots == []
        assert RevisionCounter.objects.get().head == 3
