"""Bearer-token authentication: the token alone selects the tenant (no DNS needed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tenants import roles
from tenants.models import ApiToken, Membership
from tenants.tokens import hash_token

# A token's `last_used_at` is stamped at most this often: stamping it on every request cost
# each request a commit of its own (a WAL flush) before its real work. Last use is known to
# within a minute, as agents' `last_seen` is to 30 s (issuance.services.agents).
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


class InvalidToken(exceptions.AuthenticationFailed):
    """401 `invalid_token`: no such token, revoked or expired (RFC 6750 uses the same code)."""

    default_detail = "unknown, revoked or expired API token"
    error_code = "invalid_token"


def bearer_secret(request: Request) -> str | None:
    """The secret of `Authorization: Bearer <secret>`; None without the header."""
    header = authentication.get_authorization_header(request).decode("latin-1")
    if not header:
        return None
    keyword, _, secret = header.partition(" ")
    if keyword != TenantTokenAuthentication.keyword or not secret.strip():
        raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <token>'")
    return secret.strip()


def live_tenant_token(secret: str) -> ApiToken | None:
    """The unrevoked, unexpired tenant token with this secret, read from the database now.

    Read on every request (no cache), so a revocation or an expiry holds at once on every
    web replica.
    """
    now = timezone.now()
    # The role of the member the token acts for (None once they left), in the same query.
    member_role = Membership.objects.filter(
        user_id=OuterRef("created_by_id"), tenant_id=OuterRef("tenant_id"), active=True
    ).values("role")[:1]
    return (
        ApiToken.objects.select_related("tenant", "created_by")
        .filter(token_hash=hash_token(secret), revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .annotate(member_role=Subquery(member_role))
        .first()
    )


class TenantTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` → the token's tenant; the connection moves to its schema."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        secret = bearer_secret(request)
        if secret is None:
            return None
        connection.set_schema_to_public()
        token = live_tenant_token(secret)
        if token is None:
            raise InvalidToken()
        held = roles.grants(token.role)
        if token.created_by_id is not None:
            # The member the token acts for: its current role caps the token's, and a token
            # of someone who left the tenant opens nothing.
            member_role = token.member_role  # type: ignore[attr-defined]
            if member_role is None:
                raise InvalidToken()
            held = held & roles.grants(member_role)
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        request._request.tenant = token.tenant  # type: ignore[attr-defined]
        request._request.actor = f"token:{token.prefix}"  # type: ignore[attr-defined]
        connection.set_tenant(token.tenant)
        return (TenantPrincipal(token, held), token)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class TenantPrincipal:
    """The principal behind a tenant token (DRF wants a user object): what it may do."""

    is_authenticated = True
    is_anonymous = False
    is_platform_operator = False

    def __init__(self, token: ApiToken, held: frozenset[roles.Grant]) -> None:
        self.token = token
        self.tenant = token.tenant
        self.role = token.role
        self.grants = held
        self.spiffe_id_prefix = token.spiffe_id_prefix
        self.user = token.created_by

    def __str__(self) -> str:
        return f"token:{self.token.prefix}"
