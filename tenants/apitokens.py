"""Tenant API tokens made, listed and revoked through the API: who may make which token.

A token acts with the role it was made with, never above its maker's (a subset of the maker's
grants, tenants.roles), only on entries under its `spiffe_id_prefix` when it has one (inside
the maker's own prefix), and until `expires_at`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from hallmark.errors import HallmarkError
from hallmark.spiffeid import SpiffeId, TrustDomain
from tenants import roles
from tenants.api.errors import ApiError
from tenants.models import ApiToken, Tenant
from tenants.services import issue_api_token_row, record_audit


def check_role(role: object) -> str:
    if role not in roles.ROLES:
        raise ApiError("unknown_role", f"role must be one of {', '.join(roles.ROLES)}")
    return str(role)


def normalized_prefix(text: str, *, tenant: Tenant) -> str:
    """`spiffe://td/payments` or `.../payments/` → `spiffe://td/payments/`; 400 otherwise."""
    if not text:
        return ""
    try:
        spiffe_id = SpiffeId.parse(text[:-1] if text.endswith("/") else text)
    except HallmarkError as exc:
        raise ApiError(
            "invalid_spiffe_id_prefix", f"spiffe_id_prefix is not a SPIFFE ID: {exc.detail}"
        ) from None
    if spiffe_id.trust_domain != TrustDomain(tenant.trust_domain):
        raise ApiError(
            "spiffe_id_outside_trust_domain",
            f"spiffe_id_prefix {text!r} is not in this tenant's trust domain "
            f"{tenant.trust_domain!r}",
        )
    return f"{spiffe_id}/"


def create_api_token(  # noqa: PLR0913 - the token's fields and the maker
    *,
    tenant: Tenant,
    principal: Any,
    name: str,
    role: object,
    spiffe_id_prefix: str = "",
    expires_at: dt.datetime | None = None,
    source: str = "",
) -> tuple[str, ApiToken]:
    """A new token of `tenant` made by `principal`; the secret is answered once."""
    role = check_role(role)
    prefix = normalized_prefix(spiffe_id_prefix, tenant=tenant)
    if expires_at is not None and expires_at <= timezone.now():
        raise ApiError("invalid_expiry", "expires_at must be in the future")
    if not roles.not_above(role, principal.grants):
        raise ApiError("permission_denied", f"a {principal.role} may not make a {role} token", 403)
    maker_prefix = principal.spiffe_id_prefix
    if maker_prefix and not (prefix and prefix.startswith(maker_prefix)):
        raise ApiError(
            "permission_denied",
            f"the token's spiffe_id_prefix must be under this token's {maker_prefix!r}",
            403,
        )
    connection.set_schema_to_public()
    with transaction.atomic():
        secret, token = issue_api_token_row(
            tenant=tenant,
            created_by=principal.user,
            name=name,
            role=role,
            spiffe_id_prefix=prefix,
            expires_at=expires_at,
        )
        record_audit(
            tenant=tenant,
            actor=str(principal),
            action="api_token.create",
            target=token.prefix,
            source=source,
            detail={
                "name": name,
                "role": role,
                "spiffe_id_prefix": prefix,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return secret, token


def list_api_tokens(*, tenant: Tenant) -> list[ApiToken]:
    """The tenant's live tokens, newest first (revoked ones authenticate nothing)."""
    connection.set_schema_to_public()
    return list(
        ApiToken.objects.filter(tenant=tenant, revoked_at__isnull=True).order_by("-created_at")
    )
