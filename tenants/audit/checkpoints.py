"""Signed checkpoints and retention.

A checkpoint says "chain K had N events ending in hash H at time T", signed by the platform's
audit key, which a key manager (OpenBao transit or PKCS#11) holds and never lets go of. A
trail that ends before its last checkpoint has lost its tail, even if the chain's head row
was rewound with it. Retention drops only whole checkpointed segments: the events up to a
checkpoint older than the retention period go, and a signed "prune" record at that sequence
lets the trail start after it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import uuid
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tenants.audit.models import AuditChain, AuditCheckpoint, AuditEvent, AuditSigningKey

log = logging.getLogger(__name__)
# The key manager owner of the platform's own keys: no tenant has the nil UUID.
PLATFORM_KEY_OWNER = uuid.UUID(int=0)
KEY_PURPOSE = "auditcheckpoint"
_KEY_LOCK = 0x4155_4454  # pg_advisory_xact_lock id: one platform audit key is ever created
_public_keys: dict[str, ec.EllipticCurvePublicKey] = {}
_cache_lock = threading.Lock()


def checkpoint_digest(
    *,
    kind: str,
    chain: str,
    tenant_id: uuid.UUID | None,
    head_sequence: int,
    head_hash: str,
    count: int,
    at: dt.datetime,
    key_ref: str,
) -> bytes:
    """SHA-256 of the checkpoint's canonical encoding: what the platform key signs."""
    document = {
        "v": 1,
        "kind": kind,
        "chain": chain,
        "tenant_id": str(tenant_id) if tenant_id else None,
        "head_sequence": head_sequence,
        "head_hash": head_hash,
        "count": count,
        "at": at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "key_ref": key_ref,
    }
    return hashlib.sha256(
        json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    ).digest()


def _digest_of(mark: AuditCheckpoint) -> bytes:
    return checkpoint_digest(
        kind=mark.kind,
        chain=mark.chain,
        tenant_id=mark.tenant_id,
        head_sequence=mark.head_sequence,
        head_hash=mark.head_hash,
        count=mark.count,
        at=mark.at,
        key_ref=mark.key.key_ref,
    )


def _key_manager(name: str) -> Any:
    from trustdomains.keymanagers import get_key_manager  # the platform's key managers

    return get_key_manager(name)


def signing_key() -> AuditSigningKey:
    """The platform's audit key, created in the default key manager on first use."""
    existing = AuditSigningKey.objects.order_by("-id").first()
    if existing is not None:
        return existing
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_KEY_LOCK])
        existing = AuditSigningKey.objects.order_by("-id").first()
        if existing is not None:
            return existing
        manager_name = settings.DEFAULT_KEY_MANAGER
        key_ref = _key_manager(manager_name).create_key(
            tenant_id=PLATFORM_KEY_OWNER, purpose=KEY_PURPOSE
        )
        return AuditSigningKey.objects.create(key_manager=manager_name, key_ref=key_ref)


def public_key(key: AuditSigningKey) -> ec.EllipticCurvePublicKey:
    """The key's public half, as the key manager (not the database) gives it."""
    with _cache_lock:
        cached = _public_keys.get(key.key_ref)
    if cached is None:
        signer = _key_manager(key.key_manager).signer(key.key_ref, tenant_id=PLATFORM_KEY_OWNER)
        cached = signer.public_key()
        with _cache_lock:
            _public_keys[key.key_ref] = cached
    return cached


def signature_valid(mark: AuditCheckpoint) -> bool:
    try:
        public_key(mark.key).verify(
            bytes(mark.signature), _digest_of(mark), ec.ECDSA(utils.Prehashed(hashes.SHA256()))
        )
    except InvalidSignature:
        return False
    return True


def _sign(marks: list[AuditCheckpoint], key: AuditSigningKey) -> None:
    signer = _key_manager(key.key_manager).signer(key.key_ref, tenant_id=PLATFORM_KEY_OWNER)
    signatures = signer.sign_digests([_digest_of(m) for m in marks])
    for mark, signature in zip(marks, signatures, strict=True):
        mark.signature = signature


def write_checkpoints() -> int:
    """A signed checkpoint for every chain that grew since its last one; how many were made."""
    key = signing_key()
    latest = dict(
        AuditCheckpoint.objects.filter(kind=AuditCheckpoint.Kind.CHECKPOINT)
        .order_by("chain", "-head_sequence")
        .distinct("chain")
        .values_list("chain", "head_sequence")
    )
    now = timezone.now()
    marks = [
        AuditCheckpoint(
            chain=chain.key,
            tenant_id=chain.tenant_id,
            kind=AuditCheckpoint.Kind.CHECKPOINT,
            head_sequence=chain.sequence,
            head_hash=chain.head_hash,
            count=chain.sequence,
            at=now,
            key=key,
        )
        for chain in AuditChain.objects.filter(sequence__gt=0).iterator(chunk_size=1000)
        if chain.sequence > latest.get(chain.key, 0)
    ]
    for start in range(0, len(marks), 500):
        chunk = marks[start : start + 500]
        _sign(chunk, key)
        AuditCheckpoint.objects.bulk_create(chunk)
    return len(marks)


def retention_days() -> int:
    return int(getattr(settings, "AUDIT_RETENTION_DAYS", 0) or 0)


def prune(now: dt.datetime | None = None) -> int:
    """Drop whole checkpointed segments older than the retention period; events dropped.

    For each chain, the newest checkpoint made before the cut-off marks the segment: its
    events (all older than the checkpoint) go, and a signed prune record takes its place.
    Off (0 days) by default.
    """
    days = retention_days()
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    key = signing_key()
    dropped = 0
    candidates = (
        AuditCheckpoint.objects.filter(kind=AuditCheckpoint.Kind.CHECKPOINT, at__lte=cutoff)
        .order_by("chain", "-head_sequence")
        .distinct("chain")
    )
    for mark in candidates.select_related("key"):
        with transaction.atomic():
            already = (
                AuditCheckpoint.objects.filter(chain=mark.chain, kind=AuditCheckpoint.Kind.PRUNE)
                .order_by("-head_sequence")
                .values_list("head_sequence", flat=True)
                .first()
            ) or 0
            if mark.head_sequence <= already or not signature_valid(mark):
                continue
            record = AuditCheckpoint(
                chain=mark.chain,
                tenant_id=mark.tenant_id,
                kind=AuditCheckpoint.Kind.PRUNE,
                head_sequence=mark.head_sequence,
                head_hash=mark.head_hash,
                count=mark.count,
                at=timezone.now(),
                key=key,
            )
            _sign([record], key)
            record.save()
            events = AuditEvent.objects.filter(sequence__lte=mark.head_sequence)
            if mark.tenant_id is None:
                events = events.filter(tenant__isnull=True)
            else:
                events = events.filter(tenant_id=mark.tenant_id)
            count, _ = events.delete()
            dropped += count
            log.info("audit retention dropped %s events of chain %s", count, mark.chain)
    return dropped
