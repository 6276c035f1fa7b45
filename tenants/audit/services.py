"""Appending to the audit trail: every event is the next link of its tenant's hash chain.

`record_audit` / `record_audits` (re-exported by `tenants.services`) write in the caller's
transaction. They first lock the chain's head row (an upsert that bumps its sequence), so two
transactions appending to one chain take turns and the chain stays linear; the lock is held
until the caller commits, and a rollback takes the links and the head back together.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone

from tenants.audit.chain import (
    GENESIS_HASH,
    LINKED_FIELDS,
    chain_key,
    link_hash,
    normalise_detail,
)
from tenants.audit.context import current_request_id, current_source_address
from tenants.audit.models import AuditChain, AuditEvent

if TYPE_CHECKING:
    from tenants.models import Tenant


@dataclass(frozen=True)
class AuditRecord:
    """One row for `record_audits`: what `record_audit` takes besides tenant, actor, source."""

    action: str
    target: str = ""
    outcome: str = "success"
    detail: dict[str, Any] | None = None


def record_audit(
    *,
    tenant: Tenant | None,
    actor: str,
    action: str,
    target: str = "",
    outcome: str = "success",
    source: str = "",
    detail: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """Append an audit row (public schema), in the caller's transaction.

    `source` and `request_id` default to those of the request being served, if any.
    """
    (event,) = _append(
        tenant=tenant,
        actor=actor,
        source=source,
        request_id=request_id,
        records=[AuditRecord(action=action, target=target, outcome=outcome, detail=detail)],
    )
    return event


def record_denied_write(
    *,
    tenant: Tenant,
    actor: str,
    resource: str,
    path: str,
    role: str,
    source: str = "",
    **detail: Any,
) -> AuditEvent:
    """The trail's row for a write a role was refused (API and console alike)."""
    return record_audit(
        tenant=tenant,
        actor=actor,
        action=f"{resource}.write",
        target=path[:2100],
        outcome="denied",
        source=source,
        detail={"code": "permission_denied", "role": role, **detail},
    )


def record_audits(
    *,
    tenant: Tenant,
    actor: str,
    records: list[AuditRecord],
    source: str = "",
    request_id: str | None = None,
) -> None:
    """Append many audit rows of one call at once (one INSERT), in the caller's transaction.

    Each row has exactly the shape `record_audit` writes; a batch call of 500 entries writes
    its 500 rows here under one lock of the chain instead of 500 INSERTs.
    """
    if records:
        _append(tenant=tenant, actor=actor, source=source, request_id=request_id, records=records)


def _append(
    *,
    tenant: Tenant | None,
    actor: str,
    source: str,
    request_id: str | None,
    records: list[AuditRecord],
) -> list[AuditEvent]:
    schema = connection.schema_name
    connection.set_schema_to_public()
    try:
        # In the caller's transaction if it has one (no savepoint: a failure here fails it),
        # else in one of its own: the head's lock, the links and the new head commit together.
        with transaction.atomic(savepoint=False):
            return _link(
                tenant=tenant,
                actor=actor[:300],
                source=(source or current_source_address())[:300],
                request_id=(current_request_id() if request_id is None else request_id)[:128],
                records=records,
            )
    finally:
        if tenant is not None and schema == tenant.schema_name:
            connection.set_tenant(tenant)
        elif schema != "public":
            connection.set_schema(schema)


def lock_chain(tenant_id: uuid.UUID | None, count: int) -> tuple[int, str]:
    """Reserve `count` sequence numbers of the chain, locking its head until commit.

    Returns the sequence and hash of the link before them (0 and the genesis hash for a new
    chain). The caller must set the head's hash (`advance_head`) in the same transaction.
    """
    key = chain_key(tenant_id)
    table = AuditChain._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, tenant_id, sequence, head_hash) "  # noqa: S608 - our table
            "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE "
            f"SET sequence = {table}.sequence + EXCLUDED.sequence "
            "RETURNING sequence, head_hash",
            [key, tenant_id, count, GENESIS_HASH],
        )
        sequence, head_hash = cursor.fetchone()
    return int(sequence) - count, str(head_hash)


def advance_head(tenant_id: uuid.UUID | None, head_hash: str) -> None:
    AuditChain.objects.filter(key=chain_key(tenant_id)).update(head_hash=head_hash)


def _link(
    *,
    tenant: Tenant | None,
    actor: str,
    source: str,
    request_id: str,
    records: list[AuditRecord],
) -> list[AuditEvent]:
    tenant_id = tenant.pk if tenant is not None else None
    slug = tenant.slug if tenant is not None else ""
    sequence, prev_hash = lock_chain(tenant_id, len(records))
    at = timezone.now()  # taken under the lock: a chain's times never run backwards
    events = []
    for record in records:
        sequence += 1
        event = build_event(
            tenant_id=tenant_id,
            tenant_slug=slug,
            sequence=sequence,
            at=at,
            actor=actor,
            action=record.action,
            target=record.target[:2100],
            outcome=record.outcome,
            source=source,
            request_id=request_id,
            detail=record.detail or {},
            prev_hash=prev_hash,
        )
        prev_hash = event.hash
        events.append(event)
    if len(events) == 1:
        _insert_and_advance(events[0])  # one round trip for the common single event
    else:
        AuditEvent.objects.bulk_create(events, batch_size=1000)
        advance_head(tenant_id, prev_hash)
    return events


_COLUMNS = ("tenant_id", *LINKED_FIELDS, "hash")


def _insert_and_advance(event: AuditEvent) -> None:
    """Insert the event and move the chain head to it in one statement."""
    values = [getattr(event, column) for column in _COLUMNS]
    values[_COLUMNS.index("detail")] = json.dumps(event.detail)
    placeholders = ", ".join("%s::jsonb" if c == "detail" else "%s" for c in _COLUMNS)
    events, chains = AuditEvent._meta.db_table, AuditChain._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH event AS (INSERT INTO {events} ({', '.join(_COLUMNS)}) "  # noqa: S608 - ours
            f"VALUES ({placeholders}) RETURNING id) "
            f"UPDATE {chains} SET head_hash = %s WHERE key = %s RETURNING (SELECT id FROM event)",
            [*values, event.hash, chain_key(event.tenant_id)],
        )
        (event.id,) = cursor.fetchone()
    event._state.adding, event._state.db = False, connection.alias


def build_event(
    *,
    tenant_id: uuid.UUID | None,
    tenant_slug: str,
    sequence: int,
    at: dt.datetime,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    source: str,
    request_id: str,
    detail: dict[str, Any],
    prev_hash: str,
) -> AuditEvent:
    """An unsaved event with its link hash computed."""
    detail = normalise_detail(detail)
    fields: dict[str, Any] = {
        "tenant_slug": tenant_slug,
        "sequence": sequence,
        "at": at,
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "source": source,
        "request_id": request_id,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    return AuditEvent(tenant_id=tenant_id, hash=link_hash(tenant_id=tenant_id, **fields), **fields)
