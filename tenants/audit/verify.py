"""Verification of a chain: every link re-hashed, linked, gapless, and as long as signed.

The events are streamed in sequence order through a server-side cursor, a chunk at a time,
so a trail of any length is verified in constant memory. The chain's head row and its signed
checkpoints are read first: every event they vouch for was committed before the events are
read, so a trail that ends before them has lost its tail.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import transaction

from tenants.audit.chain import GENESIS_HASH, LINKED_FIELDS, chain_key, link_hash
from tenants.audit.models import AuditChain, AuditCheckpoint, AuditEvent

CHUNK = 2000
LINK_FIELDS = ("id", *LINKED_FIELDS, "hash")


@dataclass
class Verification:
    """The answer of `verify_chain`; `first_invalid_*` and `reason` only when not valid."""

    valid: bool
    events: int
    head_hash: str
    head_sequence: int
    checkpoints: int = 0
    last_checkpoint: dict[str, Any] | None = None
    first_invalid_id: int | None = None
    first_invalid_sequence: int | None = None
    reason: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        answer = asdict(self)
        answer.pop("extra")
        if self.valid:
            for name in ("first_invalid_id", "first_invalid_sequence", "reason", "detail"):
                answer.pop(name)
        return answer


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str, *, event_id: int | None, sequence: int) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.event_id, self.sequence = reason, detail, event_id, sequence


def chain_events(tenant_id: uuid.UUID | None) -> Any:
    """The chain's events (a queryset); the platform's are those with no tenant."""
    if tenant_id is None:
        return AuditEvent.objects.filter(tenant__isnull=True)
    return AuditEvent.objects.filter(tenant_id=tenant_id)


def verify_chain(tenant_id: uuid.UUID | None) -> Verification:
    """Verify the chain of the tenant (None: the platform's own)."""
    from tenants.audit import checkpoints as signed

    key = chain_key(tenant_id)
    head = AuditChain.objects.filter(key=key).values_list("sequence", "head_hash").first()
    marks = list(
        AuditCheckpoint.objects.filter(chain=key)
        .order_by("head_sequence", "id")
        .select_related("key")
    )
    for mark in marks:
        if not signed.signature_valid(mark):
            return Verification(
                valid=False,
                events=0,
                head_hash="",
                head_sequence=0,
                checkpoints=len(marks),
                reason="checkpoint_signature_invalid",
                detail=f"checkpoint {mark.id} (sequence {mark.head_sequence}) is not signed "
                "by the platform's audit key",
                first_invalid_sequence=mark.head_sequence,
            )
    last_mark = max(
        (m for m in marks if m.kind == AuditCheckpoint.Kind.CHECKPOINT),
        key=lambda m: m.head_sequence,
        default=None,
    )
    answer = Verification(
        valid=True,
        events=0,
        head_hash=GENESIS_HASH,
        head_sequence=0,
        checkpoints=len(marks),
        last_checkpoint=None
        if last_mark is None
        else {
            "id": last_mark.id,
            "sequence": last_mark.head_sequence,
            "hash": last_mark.head_hash,
            "at": last_mark.at.isoformat(),
        },
    )
    try:
        with transaction.atomic():  # a named cursor that streams (no WITH HOLD copy)
            _walk(tenant_id, answer, marks, head)
    except _Invalid as bad:
        answer.valid = False
        answer.reason, answer.detail = bad.reason, bad.detail
        answer.first_invalid_id, answer.first_invalid_sequence = bad.event_id, bad.sequence
    return answer


def _rows(tenant_id: uuid.UUID | None) -> Iterator[tuple[Any, ...]]:
    query = chain_events(tenant_id).order_by("sequence").values_list(*LINK_FIELDS)
    return query.iterator(chunk_size=CHUNK)  # type: ignore[no-any-return]


def _walk(
    tenant_id: uuid.UUID | None,
    answer: Verification,
    marks: list[AuditCheckpoint],
    head: tuple[int, str] | None,
) -> None:
    checkpointed = {m.head_sequence: m for m in marks if m.kind == AuditCheckpoint.Kind.CHECKPOINT}
    pruned = {m.head_sequence: m for m in marks if m.kind == AuditCheckpoint.Kind.PRUNE}
    expected, prev_hash, last_id = 1, GENESIS_HASH, None
    for row in _rows(tenant_id):
        values = dict(zip(LINK_FIELDS, row, strict=True))
        event_id, sequence = values["id"], values["sequence"]
        stored_prev, stored_hash = values["prev_hash"], values["hash"]
        if answer.events == 0 and sequence != 1:
            base = pruned.get(sequence - 1)
            if base is None:
                raise _Invalid(
                    "sequence_gap",
                    f"the trail starts at sequence {sequence}: events 1..{sequence - 1} are "
                    "missing and no signed retention record covers them",
                    event_id=event_id,
                    sequence=1,
                )
            expected, prev_hash = sequence, base.head_hash
        if sequence != expected:
            raise _Invalid(
                "sequence_gap",
                f"events {expected}..{sequence - 1} are missing before event {event_id}",
                event_id=event_id,
                sequence=expected,
            )
        recomputed = link_hash(tenant_id=tenant_id, **{f: values[f] for f in LINKED_FIELDS})
        if recomputed != stored_hash:
            raise _Invalid(
                "hash_mismatch",
                f"event {event_id} (sequence {sequence}) was changed: its fields no longer "
                "hash to its stored hash",
                event_id=event_id,
                sequence=sequence,
            )
        if stored_prev != prev_hash:
            raise _Invalid(
                "chain_broken",
                f"event {event_id} (sequence {sequence}) does not link to the event before it",
                event_id=event_id,
                sequence=sequence,
            )
        mark = checkpointed.get(sequence)
        if mark is not None and mark.head_hash != stored_hash:
            raise _Invalid(
                "checkpoint_mismatch",
                f"event {event_id} (sequence {sequence}) is not the one checkpoint {mark.id} "
                f"signed at {mark.at.isoformat()}",
                event_id=event_id,
                sequence=sequence,
            )
        prev_hash, expected, last_id = stored_hash, sequence + 1, event_id
        answer.events += 1
    if answer.events == 0 and pruned:
        base = max(pruned.values(), key=lambda m: m.head_sequence)
        expected, prev_hash = base.head_sequence + 1, base.head_hash
    answer.head_sequence, answer.head_hash = expected - 1, prev_hash
    _check_tail(answer, checkpointed, head, last_id)


def _check_tail(
    answer: Verification,
    checkpointed: dict[int, AuditCheckpoint],
    head: tuple[int, str] | None,
    last_id: int | None,
) -> None:
    last = answer.head_sequence
    signed_length = max(checkpointed, default=0)
    if signed_length > last:
        mark = checkpointed[signed_length]
        raise _Invalid(
            "truncated",
            f"the trail ends at sequence {last} (event {last_id}) but checkpoint {mark.id}, "
            f"signed at {_iso(mark.at)}, vouches for {signed_length} events",
            event_id=None,
            sequence=last + 1,
        )
    if head is not None and head[0] > last:
        raise _Invalid(
            "truncated",
            f"the trail ends at sequence {last} (event {last_id}) but the chain's head "
            f"records {head[0]} events",
            event_id=None,
            sequence=last + 1,
        )


def _iso(at: dt.datetime) -> str:
    return at.isoformat()
