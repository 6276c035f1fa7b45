"""JWT-SVID signing keys: created in the key manager, journaled in the database, published.

The public entry points are in `trustdomains.services`; this module holds their mechanics.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.utils import timezone

from hallmark.signing import Signer
from tenants.services import record_audit
from trustdomains import bundles
from trustdomains.keymanagers import KeyManager, get_key_manager
from trustdomains.models import JwtAuthority, TrustDomain

if TYPE_CHECKING:
    from tenants.models import Tenant

log = logging.getLogger(__name__)
# A JWT authority must outlive the shortest JWT-SVID it can sign (exp is whole seconds).
MIN_REMAINING = dt.timedelta(seconds=2)


def new_key_id() -> str:
    """A fresh JWK `kid`: 32 random URL-safe characters that reveal nothing about the key."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class NewJwtKey:
    """A key just created in the key manager, before its row exists."""

    key_ref: str
    public_key_der: bytes


def create_key(manager: KeyManager, tenant_id: uuid.UUID) -> NewJwtKey:
    """Generate a non-exportable P-256 key for JWT-SVIDs and read its public half."""
    key_ref = manager.create_key(tenant_id=tenant_id, purpose="jwt")
    public_key = manager.signer(key_ref).public_key()
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return NewJwtKey(key_ref, der)


def store(
    trust_domain: TrustDomain,
    manager_name: str,
    key: NewJwtKey,
    status: str,
    *,
    now: dt.datetime | None = None,
) -> JwtAuthority:
    """The authority's row; it lives as long as a CA (SPIRE gives its JWT key the CA's TTL)."""
    now = now or timezone.now()
    return JwtAuthority.objects.create(
        trust_domain=trust_domain,
        key_id=new_key_id(),
        status=status,
        key_manager=manager_name,
        key_ref=key.key_ref,
        public_key_der=key.public_key_der,
        not_before=now,
        not_after=now + dt.timedelta(seconds=settings.CA_TTL_SECONDS),
    )


def published(trust_domain: TrustDomain) -> list[JwtAuthority]:
    """JWT keys in the bundle: prepared, active or old; neither revoked nor pruned.

    An expired key stays until rotation prunes it (with a sequence bump), so the published
    bundle never changes without a new `spiffe_sequence`.
    """
    return list(trust_domain.jwt_authorities.published())


def usable(trust_domain: TrustDomain) -> JwtAuthority | None:
    """The active key if it can sign now: not revoked, not (about to be) expired."""
    return (
        trust_domain.jwt_authorities.filter(
            status=JwtAuthority.Status.ACTIVE,
            revoked=False,
            not_after__gt=timezone.now() + MIN_REMAINING,
        )
        .order_by("-not_before")
        .first()
    )


def add(
    trust_domain_pk: int, *, tenant: Tenant, status: str, action: str, actor: str
) -> JwtAuthority:
    """Create a JWT key and its row under the trust domain's row lock; bump the bundle.

    Call inside `transaction.atomic()`. For an active key, a usable active key found after
    the lock is taken wins (a racing process made it) and nothing is created.
    """
    trust_domain = TrustDomain.objects.select_for_update().get(pk=trust_domain_pk)
    if status == JwtAuthority.Status.ACTIVE:
        existing = usable(trust_domain)
        if existing is not None:
            return existing
        # An active key that expired or was revoked retires before the new one takes over.
        trust_domain.jwt_authorities.filter(status=JwtAuthority.Status.ACTIVE).update(
            status=JwtAuthority.Status.OLD
        )
    # The key is made while the row is locked, so racing callers make one key, not two. If the
    # transaction then fails, the orphan key is destroyed with the tenant's other keys.
    key = create_key(get_key_manager(trust_domain.key_manager), tenant.id)
    authority = store(trust_domain, trust_domain.key_manager, key, status)
    trust_domain.bundle_sequence += 1
    trust_domain.bundle_sequence_changed_at = timezone.now()
    trust_domain.save(update_fields=["bundle_sequence", "bundle_sequence_changed_at"])
    record_audit(
        tenant=tenant,
        actor=actor,
        action=action,
        target=authority.key_id,
        detail={
            "jwt_authority": str(authority.id),
            "status": status,
            "not_after": authority.not_after.isoformat(),
            "bundle_sequence": trust_domain.bundle_sequence,
        },
    )
    bundles.announce_change(tenant)
    log.info("%s: new %s JWT authority %s", trust_domain.name, status, authority.key_id)
    return authority


def jwt_svid_ttl(
    requested: dt.timedelta, *, not_after: dt.datetime, now: dt.datetime
) -> dt.timedelta:
    """The lifetime to mint with: as requested, but `exp` never after the key's not_after."""
    issued_at = math.floor(now.timestamp())  # what hallmark.jwtsvid writes as iat
    remaining = dt.timedelta(seconds=math.floor(not_after.timestamp()) - issued_at)
    return min(requested, remaining)


class StoredKeySigner:
    """The key manager's signer, with the public key from the database (saves a round trip)."""

    def __init__(self, signer: Signer, public_key: ec.EllipticCurvePublicKey) -> None:
        self._signer = signer
        self._public_key = public_key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def sign_digest(self, digest: bytes) -> bytes:
        return self._signer.sign_digest(digest)

    def sign_digests(self, digests: Sequence[bytes]) -> list[bytes]:
        return self._signer.sign_digests(digests)
