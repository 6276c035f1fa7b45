"""Login and logout: an email and a password become a session API token for one tenant.

Wrong email and wrong password answer the same 401 `invalid_credentials`, and an unknown
email still costs one password hash, so neither the answer nor its time tells who has an
account. Failed logins are counted in Redis per account and per client address (every web
replica sees the same counts); past HALLMARK_LOGIN_RATE_LIMIT failures in the window, both
the API and the /login page answer 429 `rate_limited` with Retry-After, even for the right
password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.http import HttpRequest
from django.utils import timezone

from tenants import edgerefusals, ratelimit
from tenants.api.errors import ApiError
from tenants.events import shared_redis
from tenants.models import ApiToken, Membership, Tenant
from tenants.services import issue_api_token_row, record_audit

DEFAULT_SESSION_TTL = dt.timedelta(hours=12)


class InvalidCredentials(ApiError):
    def __init__(self) -> None:
        super().__init__("invalid_credentials", "wrong email or password", 401)


@dataclass(frozen=True)
class Session:
    """A session token (shown once) and what it opens."""

    token: str
    expires_at: dt.datetime
    tenant: Tenant
    role: str


# -- failure counts -----------------------------------------------------------------------------
def _counters(email: str, request: HttpRequest) -> list[tuple[str, str]]:
    """(scope, client) of the two counts: the account (hashed email) and the address."""
    account = hashlib.sha256(email.encode()).hexdigest()[:32]
    return [("login-account", account), ("login-address", ratelimit.client_address(request))]


def _rate() -> ratelimit.Rate:
    limit = settings.LOGIN_RATE_LIMIT
    return limit if isinstance(limit, ratelimit.Rate) else ratelimit.Rate.parse(limit)


def check_not_limited(email: str, request: HttpRequest) -> None:
    """429 while the account or the address has used up its failures in this window."""
    rate = _rate()
    try:
        client = shared_redis()
        for scope, who in _counters(email, request):
            key = ratelimit.KEY.format(scope=scope, client=who)
            count = int(client.get(key) or 0)
            if count >= rate.count:
                ttl = int(client.ttl(key))
                if scope in edgerefusals.SCOPES:
                    # the address's next API logins this window are refused before Django
                    edgerefusals.refusals.remember(scope, who, ttl)
                raise ratelimit.RateLimited(
                    detail="too many failed logins; retry later", wait=max(1, math.ceil(ttl))
                )
    except redis.RedisError:
        raise ApiError(
            "rate_limiter_unavailable", "logins cannot be admitted right now; retry shortly", 503
        ) from None


def _count_failure(email: str, request: HttpRequest) -> None:
    rate = _rate()
    try:
        for scope, who in _counters(email, request):
            ratelimit.hit(scope, who, rate)
    except redis.RedisError:
        pass  # the next attempt's check answers 503


# -- credentials -----------------------------------------------------------------------------
def authenticate(email: str, password: str, request: HttpRequest) -> Any:
    """The account with this email and password, or InvalidCredentials (counted, audited)."""
    email = email.strip().lower()
    check_not_limited(email, request)
    User = get_user_model()
    connection.set_schema_to_public()
    user = User.objects.filter(username=email, is_active=True).first()
    if user is None:
        User().set_password(password)  # the time a real check takes
        ok = False
    else:
        ok = user.check_password(password)  # rehashes with Argon2 if the hash is older
    if not ok:
        _count_failure(email, request)
        # In the trail of each tenant the account belongs to (a tenant sees attempts on its
        # members), else in the platform's; never the password.
        tenants: list[Tenant | None] = [None]
        if user is not None:
            tenants = [
                m.tenant
                for m in Membership.objects.filter(user=user, active=True).select_related("tenant")
            ] or [None]
        for tenant in tenants:
            record_audit(
                tenant=tenant,
                actor=f"user:{email}"[:300],
                action="auth.login",
                outcome="failure",
                source=ratelimit.client_address(request),
                detail={"code": "invalid_credentials"},
            )
        raise InvalidCredentials()
    return user


def _choose_tenant(user: Any, wanted: str | None) -> Membership:
    memberships = list(Membership.objects.filter(user=user, active=True).select_related("tenant"))
    if wanted:
        for membership in memberships:
            if wanted in (membership.tenant.slug, membership.tenant.trust_domain):
                return membership
        raise ApiError("not_a_member", "this account is not a member of that tenant", 403)
    if not memberships:
        raise ApiError("not_a_member", "this account is not a member of any tenant", 403)
    if len(memberships) > 1:
        raise ApiError(
            "tenant_required",
            f"this account belongs to {len(memberships)} tenants: name one with `tenant` "
            "(its slug or trust domain)",
        )
    return memberships[0]


def audit_web_login(user: Any, request: HttpRequest) -> None:
    """A web (session cookie) sign-in, in the trail of each tenant the account belongs to."""
    for membership in Membership.objects.filter(user=user, active=True).select_related("tenant"):
        record_audit(
            tenant=membership.tenant,
            actor=f"user:{user.username}",
            action="auth.login",
            target="web",
            source=ratelimit.client_address(request),
            detail={"role": membership.role, "via": "web"},
        )


def login(*, email: str, password: str, tenant: str | None, request: HttpRequest) -> Session:
    user = authenticate(email, password, request)
    membership = _choose_tenant(user, tenant)
    chosen = membership.tenant
    if chosen.status != Tenant.Status.ACTIVE:
        raise ApiError("tenant_suspended", "this tenant is suspended", 403)
    ttl = getattr(settings, "LOGIN_SESSION_TTL_SECONDS", None)
    expires_at = timezone.now() + (dt.timedelta(seconds=ttl) if ttl else DEFAULT_SESSION_TTL)
    secret, token = issue_api_token_row(
        tenant=chosen,
        created_by=user,
        name=f"session {user.username}"[:100],
        role=membership.role,
        expires_at=expires_at,
        kind=ApiToken.Kind.SESSION,
    )
    record_audit(
        tenant=chosen,
        actor=f"user:{user.username}",
        action="auth.login",
        target=token.prefix,
        source=ratelimit.client_address(request),
        detail={"role": membership.role},
    )
    return Session(token=secret, expires_at=expires_at, tenant=chosen, role=membership.role)


def logout(*, token: ApiToken, actor: str, source: str = "") -> None:
    """Revoke the caller's own token (from then on it opens nothing, on every replica)."""
    connection.set_schema_to_public()
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    record_audit(
        tenant=token.tenant, actor=actor, action="auth.logout", target=token.prefix, source=source
    )
