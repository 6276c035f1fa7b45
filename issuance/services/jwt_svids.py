"""Workload JWT-SVIDs for an agent: authorised entries only, signed in the key manager."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction

from hallmark.errors import HallmarkError
from hallmark.jwtsvid import JwtSvidRequest
from hallmark.spiffeid import SpiffeId
from issuance.models import Agent
from issuance.services.entries import authorized_entries_by_id
from issuance.services.svids import NOT_AUTHORIZED
from tenants.metering import services as metering
from tenants.services import record_audit
from trustdomains import services as trustdomain_services

if TYPE_CHECKING:
    from tenants.models import Tenant

MAX_AUDIENCES = 10
MAX_AUDIENCE_LENGTH = 255


class InvalidJwtSvidRequest(HallmarkError):
    """A JWT-SVID request with a missing or unacceptable audience."""

    code = "invalid_audience"
    http_status = 400


class EntryNotAuthorized(HallmarkError):
    """No such entry, or the calling agent is not authorised for it."""

    code = NOT_AUTHORIZED
    http_status = 403


@dataclass(frozen=True)
class MintedJwtSvid:
    """A JWT-SVID in compact form and its `iat` / `exp` (Unix seconds)."""

    token: str
    issued_at: int
    expires_at: int


def clean_audience(audience: Sequence[str]) -> tuple[str, ...]:
    """One to MAX_AUDIENCES non-empty audiences of at most MAX_AUDIENCE_LENGTH characters."""
    values = tuple(audience)
    if not values:
        raise InvalidJwtSvidRequest("audience is required (JWT-SVID.md 3.2)")
    if len(values) > MAX_AUDIENCES:
        raise InvalidJwtSvidRequest(f"at most {MAX_AUDIENCES} audiences")
    for value in values:
        if not value or not value.strip():
            raise InvalidJwtSvidRequest("an audience must not be empty")
        if len(value) > MAX_AUDIENCE_LENGTH:
            raise InvalidJwtSvidRequest(f"an audience is at most {MAX_AUDIENCE_LENGTH} characters")
    return tuple(dict.fromkeys(values))


def _times(token: str) -> tuple[int, int]:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["iat"]), int(claims["exp"])


def new_jwt_svid(
    *, tenant: Tenant, agent: Agent, entry_id: str, audience: Sequence[str], source: str = ""
) -> MintedJwtSvid:
    """Mint a JWT-SVID for the entry's SPIFFE ID, living the entry's `jwt_svid_ttl`.

    Mints are not audited one by one (volume); refusals are.
    """
    wanted = clean_audience(audience)
    entry = next(iter(authorized_entries_by_id(agent, [entry_id]).values()), None)
    if entry is None:
        with transaction.atomic():
            record_audit(
                tenant=tenant,
                actor=f"agent:{agent.spiffe_id}",
                action="svid.jwt.new",
                outcome="failure",
                source=source,
                detail={"code": NOT_AUTHORIZED, "entry_ids": [entry_id[:64]]},
            )
        raise EntryNotAuthorized("no such entry, or it is not authorised for this agent")
    request = JwtSvidRequest(
        spiffe_id=SpiffeId.parse(entry.spiffe_id),
        audience=wanted,
        ttl=dt.timedelta(seconds=entry.jwt_svid_ttl),
    )
    [token] = trustdomain_services.mint_jwt_svids([request])
    metering.count_svids(tenant.pk, jwt=1)
    issued_at, expires_at = _times(token)
    return MintedJwtSvid(token=token, issued_at=issued_at, expires_at=expires_at)
