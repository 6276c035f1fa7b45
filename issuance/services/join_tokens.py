"""Join tokens: random single-use secrets, shown once, stored as SHA-256, redeemed once."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from hallmark.errors import InvalidSpiffeId
from issuance.errors import AttestationDenied, InvalidJoinTokenRequest
from issuance.models import JoinToken
from issuance.services import validation
from issuance.services.entries import tenant_trust_domain
from tenants.services import record_audit

JOIN_TOKEN_PREFIX = "hjt_"  # noqa: S105 - a public marker, not a secret

if TYPE_CHECKING:
    from tenants.models import Tenant

DEFAULT_TTL_SECONDS = 600
MAX_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class NewJoinToken:
    """A freshly generated join token and its secret, which is never retrievable again."""

    join_token: JoinToken
    token: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _ttl(value: Any) -> int:
    if value is None:
        return DEFAULT_TTL_SECONDS
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL_SECONDS:
        raise InvalidJoinTokenRequest(
            f"ttl must be a whole number of seconds between 1 and {MAX_TTL_SECONDS}",
            code="invalid_ttl",
        )
    return value


def create_join_token(
    *,
    tenant: Tenant,
    actor: str,
    ttl: int | None = None,
    spiffe_id: str | None = None,
    source: str = "",
) -> NewJoinToken:
    """Generate a token; with `spiffe_id`, the redeeming agent gets it as a node alias."""
    seconds = _ttl(ttl)
    alias: str | None = None
    if spiffe_id not in (None, ""):
        trust_domain = tenant_trust_domain()
        alias_id = validation.spiffe_id_in(spiffe_id, trust_domain, field="spiffe_id")
        if (alias_id.path + "/").startswith("/spire/agent/"):
            raise InvalidSpiffeId(
                f"spiffe_id {spiffe_id!r} is under /spire/agent/, reserved for agents' own IDs",
                code="reserved_spiffe_id",
            )
        alias = str(alias_id)
    # The prefix makes tokens recognisable (secret scanners, logs) and keeps a token from
    # starting with "-", which a command line would read as an option.
    secret = JOIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        join_token = JoinToken.objects.create(
            token_hash=hash_secret(secret),
            expires_at=timezone.now() + dt.timedelta(seconds=seconds),
            spiffe_id=alias,
        )
        record_audit(
            tenant=tenant,
            actor=actor,
            action="join_token.create",
            target=str(join_token.id),
            source=source,
            detail={"ttl": seconds, "spiffe_id": alias or ""},
        )
    return NewJoinToken(join_token=join_token, token=secret)


def delete_join_token(
    *, tenant: Tenant, actor: str, join_token_id: uuid.UUID, source: str = ""
) -> None:
    """Revoke a token (used ones stay as the record of which agent redeemed them)."""
    with transaction.atomic():
        join_token = JoinToken.objects.select_for_update().get(pk=join_token_id)
        join_token.delete()
        record_audit(
            tenant=tenant,
            actor=actor,
            action="join_token.delete",
            target=str(join_token_id),
            source=source,
        )


def redeem(secret: str) -> JoinToken:
    """Lock and consume the token for `secret`; call inside the attestation's transaction.

    Refuses unknown (`join_token_invalid`), used (`join_token_used`) and expired
    (`join_token_expired`) tokens. The caller links the agent and saves.
    """
    join_token = (
        JoinToken.objects.select_for_update().filter(token_hash=hash_secret(secret)).first()
    )
    if join_token is None:
        raise AttestationDenied("join token is not known", code="join_token_invalid")
    if join_token.used_at is not None:
        raise AttestationDenied("join token was already used", code="join_token_used")
    if join_token.expires_at <= timezone.now():
        raise AttestationDenied("join token has expired", code="join_token_expired")
    join_token.used_at = timezone.now()
    return join_token
