"""The hash chain: linear under concurrent writers; changed, deleted and cut rows are named."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from tenants.audit.chain import GENESIS_HASH
from tenants.audit.checkpoints import write_checkpoints
from tenants.audit.models import AuditChain, AuditCheckpoint
from tenants.audit.verify import verify_chain
from tenants.models import AuditEvent
from tenants.services import AuditRecord, record_audit, record_audits
from tests.tenants.audit.conftest import chain_ids, sql

pytestmark = pytest.mark.django_db(transaction=True)


def _grow(tenant, count: int, label: str = "test") -> None:  # type: ignore[no-untyped-def]
    for i in range(count):
        record_audit(
            tenant=tenant,
            actor=f"user:{label}",
            action="entry.create",
            target=f"{label}-{i}",
            detail={"n": i, "ratio": 1.0, "tags": ("a", "b")},
        )


def test_each_tenants_events_form_their_own_chain(tenant_a, tenant_b) -> None:
    # given events of two tenants and of the platform, interleaved
    _grow(tenant_a.tenant, 3, "a")
    record_audit(tenant=None, actor="operator:x", action="platform.thing")
    _grow(tenant_b.tenant, 2, "b")
    _grow(tenant_a.tenant, 2, "a")

    # then each chain is gapless from 1, starts at the genesis hash and links every event
    for tenant in (tenant_a.tenant, tenant_b.tenant):
        rows = list(AuditEvent.objects.filter(tenant=tenant).order_by("sequence"))
        assert [r.sequence for r in rows] == list(range(1, len(rows) + 1))
        assert rows[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))
        assert verify_chain(tenant.pk).valid
    platform = verify_chain(None)
    assert platform.valid and platform.events >= 1
    assert AuditChain.objects.get(key=tenant_a.tenant.pk.hex).sequence == len(
        chain_ids(tenant_a.tenant)
    )


def test_parallel_writers_keep_one_chain_linear(tenant_a) -> None:
    # given eight threads, each with its own PostgreSQL connection, appending to one chain at
    # once: single events, batches, and two events in one transaction
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(10):
                if i % 3 == 0:
                    record_audits(
                        tenant=tenant_a.tenant,
                        actor=f"writer:{n}",
                        records=[
                            AuditRecord(action="entry.create", target=f"{n}-{i}-{j}")
                            for j in range(3)
                        ],
                    )
                else:
                    with transaction.atomic():
                        record_audit(tenant=tenant_a.tenant, actor=f"writer:{n}", action="x")
                        record_audit(tenant=tenant_a.tenant, actor=f"writer:{n}", action="y")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    before = len(chain_ids(tenant_a.tenant))
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then nothing failed, every event has its own sequence number, and the chain verifies
    assert not errors, errors
    added = 8 * (4 * 3 + 6 * 2)
    result = verify_chain(tenant_a.tenant.pk)
    assert result.valid, result
    assert result.events == before + added
    sequences = list(
        AuditEvent.objects.filter(tenant=tenant_a.tenant).values_list("sequence", flat=True)
    )
    assert sorted(sequences) == list(range(1, before + added + 1))


def test_a_changed_row_is_named(tenant_a) -> None:
    # given a chain of ten events; when one row's actor is changed with SQL
    _grow(tenant_a.tenant, 10)
    ids = chain_ids(tenant_a.tenant)
    sql("UPDATE audit_auditevent SET actor = 'someone-else' WHERE id = %s", [ids[4]])

    # then verification names that very event
    result = verify_chain(tenant_a.tenant.pk)
    assert not result.valid
    assert (result.reason, result.first_invalid_id, result.first_invalid_sequence) == (
        "hash_mismatch",
        ids[4],
        5,
    )


def test_a_changed_detail_is_named(tenant_a) -> None:
    _grow(tenant_a.tenant, 4)
    ids = chain_ids(tenant_a.tenant)
    sql("""UPDATE audit_auditevent SET detail = '{"n": 99}' WHERE id = %s""", [ids[1]])
    result = verify_chain(tenant_a.tenant.pk)
    assert (result.valid, result.reason, result.first_invalid_id) == (
        False,
        "hash_mismatch",
        ids[1],
    )


def test_a_rehashed_row_breaks_the_link_to_it(tenant_a) -> None:
    # given an intruder who changes a row and recomputes its own hash
    from tenants.audit.chain import link_hash

    _grow(tenant_a.tenant, 5)
    ids = chain_ids(tenant_a.tenant)
    row = AuditEvent.objects.get(id=ids[2])
    forged = link_hash(
        tenant_id=row.tenant_id,
        tenant_slug=row.tenant_slug,
        sequence=row.sequence,
        at=row.at,
        actor="forged",
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        source=row.source,
        request_id=row.request_id,
        detail=row.detail,
        prev_hash=row.prev_hash,
    )
    sql("UPDATE audit_auditevent SET actor = 'forged', hash = %s WHERE id = %s", [forged, ids[2]])

    # then the next event no longer links to it
    result = verify_chain(tenant_a.tenant.pk)
    assert (result.valid, result.reason, result.first_invalid_id) == (False, "chain_broken", ids[3])


def test_a_deleted_row_is_named(tenant_a) -> None:
    # given a chain of ten events; when the sixth is deleted with SQL
    _grow(tenant_a.tenant, 10)
    ids = chain_ids(tenant_a.tenant)
    sql("DELETE FROM audit_auditevent WHERE id = %s", [ids[5]])

    # then verification names the missing sequence and the first event after the hole
    result = verify_chain(tenant_a.tenant.pk)
    assert not result.valid
    assert (result.reason, result.first_invalid_sequence, result.first_invalid_id) == (
        "sequence_gap",
        6,
        ids[6],
    )


def test_deleting_the_first_rows_is_named(tenant_a) -> None:
    _grow(tenant_a.tenant, 4)
    ids = chain_ids(tenant_a.tenant)
    sql("DELETE FROM audit_auditevent WHERE id IN (%s, %s)", [ids[0], ids[1]])
    result = verify_chain(tenant_a.tenant.pk)
    assert (result.valid, result.reason, result.first_invalid_id) == (False, "sequence_gap", ids[2])


def test_a_cut_tail_is_named_by_the_chain_head(tenant_a) -> None:
    # given a chain of ten events; when the last three are deleted with SQL
    _grow(tenant_a.tenant, 10)
    ids = chain_ids(tenant_a.tenant)
    sql("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [ids[-3:]])

    # then verification says the trail lost its tail from sequence 8 on
    result = verify_chain(tenant_a.tenant.pk)
    assert not result.valid
    assert (result.reason, result.first_invalid_sequence) == ("truncated", len(ids) - 2)


def test_a_cut_tail_with_a_rewound_head_is_named_by_the_signed_checkpoint(tenant_a) -> None:
    # given a chain of ten events and a signed checkpoint of it
    _grow(tenant_a.tenant, 10)
    assert write_checkpoints() >= 1
    ids = chain_ids(tenant_a.tenant)
    last_kept = AuditEvent.objects.get(id=ids[-4])

    # when the tail is cut and the chain head rewound to match, with SQL
    sql("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [ids[-3:]])
    sql(
        "UPDATE audit_auditchain SET sequence = %s, head_hash = %s WHERE key = %s",
        [last_kept.sequence, last_kept.hash, tenant_a.tenant.pk.hex],
    )

    # then the checkpoint still vouches for ten events, so the cut is named
    result = verify_chain(tenant_a.tenant.pk)
    assert not result.valid
    assert (result.reason, result.first_invalid_sequence) == ("truncated", len(ids) - 2)
    assert "checkpoint" in result.detail


def test_a_rewritten_tail_is_named_by_the_signed_checkpoint(tenant_a) -> None:
    # given six events and a signed checkpoint of them
    from tenants.audit.chain import link_hash

    _grow(tenant_a.tenant, 6)
    write_checkpoints()
    ids = chain_ids(tenant_a.tenant)

    # when an intruder changes the third event and re-hashes it and every later link (and
    # the chain head), so that the chain itself is consistent again
    prev = AuditEvent.objects.get(id=ids[1]).hash
    for event_id in ids[2:]:
        row = AuditEvent.objects.get(id=event_id)
        actor = "forged" if event_id == ids[2] else row.actor
        digest = link_hash(
            tenant_id=row.tenant_id,
            tenant_slug=row.tenant_slug,
            sequence=row.sequence,
            at=row.at,
            actor=actor,
            action=row.action,
            target=row.target,
            outcome=row.outcome,
            source=row.source,
            request_id=row.request_id,
            detail=row.detail,
            prev_hash=prev,
        )
        sql(
            "UPDATE audit_auditevent SET actor = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [actor, prev, digest, event_id],
        )
        prev = digest
    sql(
        "UPDATE audit_auditchain SET head_hash = %s WHERE key = %s",
        [prev, tenant_a.tenant.pk.hex],
    )

    # then the checkpointed head is not the event the checkpoint signed
    result = verify_chain(tenant_a.tenant.pk)
    assert (result.valid, result.reason, result.first_invalid_id) == (
        False,
        "checkpoint_mismatch",
        ids[-1],
    )


def test_a_forged_checkpoint_is_refused(tenant_a) -> None:
    # given a signed checkpoint; when its length is lowered with SQL (to hide a cut tail)
    _grow(tenant_a.tenant, 5)
    write_checkpoints()
    mark = AuditCheckpoint.objects.filter(chain=tenant_a.tenant.pk.hex).latest("id")
    sql("UPDATE audit_auditcheckpoint SET head_sequence = 3 WHERE id = %s", [mark.id])

    # then its signature no longer holds
    result = verify_chain(tenant_a.tenant.pk)
    assert (result.valid, result.reason) == (False, "checkpoint_signature_invalid")


def test_checkpoints_are_signed_by_a_key_the_key_manager_holds(tenant_a) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    from tenants.audit import checkpoints

    _grow(tenant_a.tenant, 2)
    write_checkpoints()
    mark = AuditCheckpoint.objects.filter(chain=tenant_a.tenant.pk.hex).latest("id")
    # the public key comes from the key manager; the signature checks against it
    key = checkpoints.public_key(mark.key)
    key.verify(
        bytes(mark.signature),
        checkpoints._digest_of(mark),
        ec.ECDSA(utils.Prehashed(hashes.SHA256())),
    )
    assert mark.key.key_ref.startswith(f"hallmark-{checkpoints.PLATFORM_KEY_OWNER.hex}-")
    # an unchanged chain gets no new checkpoint
    before = AuditCheckpoint.objects.filter(chain=tenant_a.tenant.pk.hex).count()
    write_checkpoints()
    assert AuditCheckpoint.objects.filter(chain=tenant_a.tenant.pk.hex).count() == before


def test_retention_drops_whole_checkpointed_segments_and_the_trail_still_verifies(
    tenant_a, settings
) -> None:
    import datetime as dt

    from django.utils import timezone

    from tenants.audit.checkpoints import prune

    # given five events, a checkpoint, then three more events
    _grow(tenant_a.tenant, 5)
    write_checkpoints()
    checkpointed = len(chain_ids(tenant_a.tenant))
    _grow(tenant_a.tenant, 3, "after")

    # when retention is off, nothing goes
    settings.AUDIT_RETENTION_DAYS = 0
    assert prune(timezone.now() + dt.timedelta(days=30)) == 0

    # when the checkpoint is older than the retention period
    settings.AUDIT_RETENTION_DAYS = 7
    assert prune(timezone.now() + dt.timedelta(days=6)) == 0  # not yet
    dropped = prune(timezone.now() + dt.timedelta(days=8))

    # then exactly the checkpointed segment went, and the rest verifies from the checkpoint
    assert dropped >= checkpointed
    remaining = AuditEvent.objects.filter(tenant=tenant_a.tenant).order_by("sequence")
    assert [e.target for e in remaining] == ["after-0", "after-1", "after-2"]
    result = verify_chain(tenant_a.tenant.pk)
    assert result.valid, result
    assert result.events == 3
    # and a later event still links on
    _grow(tenant_a.tenant, 1, "later")
    assert verify_chain(tenant_a.tenant.pk).valid

    # but deleting more than retention dropped is still named
    ids = chain_ids(tenant_a.tenant)
    sql("DELETE FROM audit_auditevent WHERE id = %s", [ids[0]])
    assert verify_chain(tenant_a.tenant.pk).reason == "sequence_gap"


def test_record_audit_keeps_its_schema_and_answers_the_event(tenant_a) -> None:
    with tenant_a.schema():
        event = record_audit(tenant=tenant_a.tenant, actor="a", action="b", request_id="r-1")
        assert connection.schema_name == tenant_a.tenant.schema_name
    assert event.pk and event.request_id == "r-1" and len(event.hash) == 64
