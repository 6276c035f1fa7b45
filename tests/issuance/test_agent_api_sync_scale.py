"""Sync under load: concurrent writers, and an agent with 100,000 entries."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid

import pytest
from django.db import connection, transaction
from django.utils import timezone

from issuance import services
from issuance.errors import EntryExists
from issuance.models import Entry
from tests.issuance.agent_steps import attested
from tests.issuance.sync_mirror import EntryMirror, authorised_in_db

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
WRITES_PER_WRITER = 60
GRPC_MESSAGE_LIMIT = 4 * 1024 * 1024


def _writer(handle, seed, parents, errors):
    """Random creates, edits, re-parents, renames and deletes through the services."""
    rng = random.Random(seed)
    td = handle.trust_domain
    mine = []
    try:
        with handle.schema() as tenant:
            for i in range(WRITES_PER_WRITER):
                roll = rng.random()
                try:
                    if roll < 0.35 or not mine:
                        entry = services.create_entry(
                            tenant=tenant,
                            actor="test",
                            fields={
                                "spiffe_id": f"spiffe://{td}/w/{rng.randrange(8)}",
                                "parent_id": rng.choice(parents),
                                "selectors": [f"unix:uid:{seed}{i}"],
                            },
                        )
                        mine.append(entry.id)
                        continue
                    target = rng.choice(mine)
                    if roll < 0.5:
                        changes = {"hint": f"h{i}"}
                    elif roll < 0.7:
                        changes = {"parent_id": rng.choice(parents)}
                    elif roll < 0.85:
                        changes = {"spiffe_id": f"spiffe://{td}/w/{rng.randrange(8)}"}
                    else:
                        services.delete_entry(tenant=tenant, actor="test", entry_id=target)
                        mine.remove(target)
                        continue
                    services.update_entry(
                        tenant=tenant, actor="test", entry_id=target, changes=changes
                    )
                except EntryExists:
                    continue
    except Exception as exc:  # reported by the test
        errors.append(exc)
    finally:
        connection.close()


def test_concurrent_writers_never_make_an_agent_miss_a_change(agent_api, tenant_a):
    # given two agents and a pool of parents: the agents and nestable workload IDs
    first, _, first_client = attested(agent_api, tenant_a)
    second, _, second_client = attested(agent_api, tenant_a)
    td = tenant_a.trust_domain
    parents = [first.spiffe_id, second.spiffe_id, *(f"spiffe://{td}/w/{k}" for k in range(8))]
    mirrors = [EntryMirror(first_client), EntryMirror(second_client)]

    # when two threads write while both agents sync again and again, a few entries a page
    errors: list[Exception] = []
    writers = [
        threading.Thread(target=_writer, args=(tenant_a, seed, parents, errors)) for seed in (1, 2)
    ]
    for writer in writers:
        writer.start()
    syncs = 0
    while any(w.is_alive() for w in writers):
        for mirror in mirrors:
            mirror.sync(page_size=3)
            syncs += 1
    for writer in writers:
        writer.join()
    for mirror in mirrors:
        mirror.sync(page_size=3)
    first_client.close()
    second_client.close()

    # then each agent's set, rebuilt only from deltas, is what the parent chain says
    assert not errors, errors
    print(f"\n{syncs} syncs during {2 * WRITES_PER_WRITER} concurrent writes")
    assert mirrors[0].revisions() == authorised_in_db(tenant_a, first.spiffe_id)
    assert mirrors[1].revisions() == authorised_in_db(tenant_a, second.spiffe_id)
    assert mirrors[0].entries or mirrors[1].entries


def _bulk_insert(td, parent_id, count, revisions):
    """COPY `count` entries under `parent_id` (roots and revisions set as the services would)."""
    now = timezone.now()
    columns = (
        "id, spiffe_id, parent_id, selectors, x509_svid_ttl, jwt_svid_ttl, dns_names, hint, "
        "federates_with, admin, downstream, revision, roots, expired, created_at, updated_at"
    )
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, for COPY
        with raw.copy(f"COPY {Entry._meta.db_table} ({columns}) FROM STDIN") as copy:
            for i in range(count):
                copy.write_row(
                    (
                        uuid.uuid4(),
                        f"spiffe://{td}/workload/{i}",
                        parent_id,
                        json.dumps([f"unix:uid:{i}"]),
                        3600,
                        300,
                        "[]",
                        "",
                        "[]",
                        False,
                        False,
                        revisions.next(),
                        [parent_id],
                        False,
                        now,
                        now,
                    )
                )


def test_agent_with_100k_entries_syncs_in_pages_then_gets_only_what_changed(agent_api, tenant_a):
    # given an agent with 100,000 entries, bulk-inserted with revisions from the counter
    identity, _, client = attested(agent_api, tenant_a)
    td = tenant_a.trust_domain
    count = 100_000
    started = time.perf_counter()
    with tenant_a.schema(), transaction.atomic(), services.locked_revisions() as revisions:
        _bulk_insert(td, identity.spiffe_id, count, revisions)
    inserted = time.perf_counter() - started

    # when it syncs from scratch, page by page
    mirror = EntryMirror(client)
    started = time.perf_counter()
    pages = mirror.sync(page_size=5000)
    full_seconds = time.perf_counter() - started
    largest = max(p.ByteSize() for p in pages)

    # then every entry arrives once, in pages under the gRPC message limit
    assert len(mirror.entries) == count
    assert sum(len(p.entries) for p in pages) == count
    assert len(pages) == count // 5000 and pages[-1].more is False
    assert largest < GRPC_MESSAGE_LIMIT

    # when one entry changes, the next sync brings that entry only
    changed_id = next(iter(mirror.entries))
    with tenant_a.schema() as tenant:
        services.update_entry(
            tenant=tenant, actor="test", entry_id=changed_id, changes={"hint": "changed"}
        )
    started = time.perf_counter()
    delta = mirror.sync(page_size=5000)
    delta_seconds = time.perf_counter() - started
    client.close()
    assert len(delta) == 1 and not delta[0].full
    assert [e.id for e in delta[0].entries] == [changed_id]
    assert mirror.entries[changed_id].hint == "changed" and len(mirror.entries) == count
    print(
        f"\n100k entries: insert {inserted:.1f}s; full sync {len(pages)} pages in "
        f"{full_seconds:.2f}s, largest page {largest / 1e6:.2f} MB; one change: "
        f"{delta[0].ByteSize()} bytes in {delta_seconds * 1000:.0f} ms"
    )
