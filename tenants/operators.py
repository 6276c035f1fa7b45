"""Platform operators: a principal of their own, apart from tenant users.

Operators live in their own table (tenants.models.Operator) with their own tokens
(OperatorToken), not as a flag on Django's User: a tenant account can then never become an
operator by a changed column, an operator is never a member of a tenant, tenant login never
answers an operator token, and the tenant-token authentication cannot find an operator token
(nor the operator one a tenant token), so each side's routes are closed to the other by
construction. Operators are made on the platform's own database by `hallmark operator create`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from tenants.api.errors import ApiError
from tenants.models import Operator, OperatorToken, Tenant
from tenants.services import MIN_PASSWORD_LENGTH, record_audit
from tenants.tokens import display_prefix, hash_token

OPERATOR_TOKEN_PREFIX = "hmo_"  # noqa: S105 - a public marker, not a secret
TENANT_CHANGES = ("status", "plan", "quotas")
QUOTA_NAMES = ("max_agents", "max_entries", "max_svids_per_month")


def create_operator(*, email: str, password: str | None = None) -> Operator:
    """A new operator; without a password it signs in with tokens only."""
    email = email.strip().lower()
    if "@" not in email:
        raise ApiError("invalid_email", f"{email!r} is not an email address")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(
            "weak_password", f"password must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    connection.set_schema_to_public()
    with transaction.atomic():
        if Operator.objects.filter(email=email).exists():
            raise ApiError("operator_exists", f"operator {email} exists already", 409)
        return Operator.objects.create(
            email=email, password=make_password(password) if password else ""
        )


def issue_operator_token(*, email: str, ttl: dt.timedelta | None = None) -> str:
    """A new API token of the operator (shown once; SHA-256 at rest)."""
    connection.set_schema_to_public()
    operator = Operator.objects.filter(email=email.strip().lower(), is_active=True).first()
    if operator is None:
        raise ApiError("operator_not_found", f"no operator {email}", 404)
    secret = OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(32)
    OperatorToken.objects.create(
        operator=operator,
        prefix=display_prefix(secret),
        token_hash=hash_token(secret),
        expires_at=timezone.now() + ttl if ttl else None,
    )
    return secret


def live_operator_token(secret: str) -> OperatorToken | None:
    """The operator token with this secret if it is unrevoked, unexpired and its operator
    active; read from the database on every call (no cache across replicas)."""
    connection.set_schema_to_public()
    token = (
        OperatorToken.objects.select_related("operator")
        .filter(token_hash=hash_token(secret), revoked_at__isnull=True, operator__is_active=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .first()
    )
    if token is not None:
        OperatorToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token


def list_tenants() -> list[Tenant]:
    connection.set_schema_to_public()
    return list(Tenant.objects.exclude(schema_name="public").order_by("created_at"))


def get_tenant(tenant_id: object) -> Tenant:
    connection.set_schema_to_public()
    tenant = Tenant.objects.exclude(schema_name="public").filter(pk=tenant_id).first()
    if tenant is None:
        raise ApiError("not_found", "no such tenant", 404)
    return tenant


def change_tenant(
    tenant_id: object, *, changes: dict[str, Any], actor: str, source: str = ""
) -> Tenant:
    """Suspend or reactivate a tenant, set its plan and quotas (stored; billing enforces).

    The change lands in the tenant's own trail, so the tenant sees what the platform did.
    """
    with transaction.atomic():
        tenant = get_tenant(tenant_id)
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        before = {name: getattr(tenant, name) for name in TENANT_CHANGES}
        if "quotas" in changes:  # the quotas named change; the others stay
            changes = {**changes, "quotas": {**tenant.quotas, **changes["quotas"]}}
        for name in TENANT_CHANGES:
            if name in changes:
                setattr(tenant, name, changes[name])
        tenant.save(update_fields=[n for n in TENANT_CHANGES if n in changes])
        after = {name: getattr(tenant, name) for name in TENANT_CHANGES}
        changed = {n: {"from": before[n], "to": after[n]} for n in changes if before[n] != after[n]}
        action = "tenant.update"
        if "status" in changed:
            action = "tenant.suspend" if tenant.status == "suspended" else "tenant.reactivate"
        # In the tenant's trail, so it sees what the platform did, and in the platform's.
        for trail in (tenant, None):
            record_audit(
                tenant=trail,
                actor=actor,
                action=action,
                target=tenant.slug,
                source=source,
                detail={"changed": changed},
            )
    return tenant


def authenticate_operator(*, email: str, password: str, request: Any) -> Operator:
    """The active operator with this email and password (the web's /operator/login).

    The same rules as a tenant user's login (tenants.accounts): one answer for an unknown
    email and a wrong password, the same failure counts per account and per address; every
    attempt lands in the platform trail. An operator made without a password cannot sign in.
    """
    from django.contrib.auth.hashers import check_password

    from tenants import accounts, ratelimit

    email = email.strip().lower()
    accounts.check_not_limited(email, request)
    connection.set_schema_to_public()
    operator = Operator.objects.filter(email=email, is_active=True).first()
    if operator is None or not operator.password:
        make_password(password)  # the time a real check takes
        ok = False
    else:
        ok = check_password(password, operator.password)
    record_audit(
        tenant=None,
        actor=f"operator:{email}"[:300],
        action="operator.login",
        outcome="success" if ok else "failure",
        source=ratelimit.client_address(request),
        detail={"via": "web"} if ok else {"code": "invalid_credentials", "via": "web"},
    )
    if not ok or operator is None:
        accounts._count_failure(email, request)
        raise accounts.InvalidCredentials()
    return operator
