"""Bearer-token authentication: the token alone selects the tenant (no DNS needed)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tenants.models import ApiToken
from tenants.tokens import hash_token


class InvalidToken(exceptions.AuthenticationFailed):
    """401 `invalid_token`: no such token, or it was revoked (RFC 6750 uses the same code)."""

    default_detail = "unknown or revoked API token"
    error_code = "invalid_token"


class TenantTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` → the token's tenant; the connection moves to its schema."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, secret = header.partition(" ")
        if keyword != self.keyword or not secret.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <token>'")
        connection.set_schema_to_public()
        token = (
            ApiToken.objects.select_related("tenant")
            .filter(token_hash=hash_token(secret.strip()), revoked_at__isnull=True)
            .first()
        )
        if token is None:
            raise InvalidToken()
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        request._request.tenant = token.tenant  # type: ignore[attr-defined]
        request._request.actor = f"token:{token.prefix}"  # type: ignore[attr-defined]
        connection.set_tenant(token.tenant)
        return (_TokenUser(token), token)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class _TokenUser:
    """The principal behind a tenant token (DRF wants a user object)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, token: ApiToken) -> None:
        self.token = token
        self.tenant = token.tenant

    def __str__(self) -> str:
        return f"token:{self.token.prefix}"
