"""Writes to the public schema: signup, API tokens and the audit trail."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from hallmark.errors import HallmarkError
from hallmark.spiffeid import TrustDomain
from tenants import schemas
from tenants.api.errors import ApiError

# The audit trail's writers live in tenants.audit; callers keep using them from here.
from tenants.audit.services import AuditRecord as AuditRecord  # noqa: PLC0414
from tenants.audit.services import record_audit as record_audit  # noqa: PLC0414
from tenants.audit.services import record_audits as record_audits  # noqa: PLC0414
from tenants.audit.services import (
    record_denied_write as record_denied_write,  # noqa: PLC0414
)
from tenants.migrating import code_fingerprint
from tenants.models import ApiToken, Domain, Membership, Tenant
from tenants.reserved import check_not_reserved
from tenants.scoping import tenant_schema
from tenants.tokens import display_prefix, hash_token, new_token

log = logging.getLogger(__name__)
MIN_PASSWORD_LENGTH = 12


def refuse_if_suspended(tenant_id: object, *, error: type[HallmarkError]) -> None:
    """Raise `error` (code `tenant_suspended`) when the tenant is suspended, read now.

    One query on the public table, from whatever schema the caller is in (the tenant
    schemas' search path includes `public`), so a suspension holds at once everywhere.
    """
    if Tenant.objects.filter(pk=tenant_id, status=Tenant.Status.SUSPENDED).exists():
        raise error("this tenant is suspended by the platform operator", code="tenant_suspended")


@dataclass(frozen=True)
class SignupResult:
    """A new tenant and the API token shown to its owner exactly once."""

    tenant: Tenant
    token: str


def issue_api_token(  # noqa: PLR0913 - the token's fields
    *,
    tenant: Tenant,
    created_by: Any = None,
    name: str = "default",
    role: str = "owner",
    spiffe_id_prefix: str = "",
    expires_at: Any = None,
    kind: str = "api",
) -> str:
    """Store a new token's hash and answer its secret (shown once). The checks of who may make
    which token are in tenants.apitokens; signup makes the owner's first token here."""
    return issue_api_token_row(
        tenant=tenant,
        created_by=created_by,
        name=name,
        role=role,
        spiffe_id_prefix=spiffe_id_prefix,
        expires_at=expires_at,
        kind=kind,
    )[0]


def issue_api_token_row(  # noqa: PLR0913 - the token's fields
    *,
    tenant: Tenant,
    created_by: Any = None,
    name: str = "default",
    role: str = "owner",
    spiffe_id_prefix: str = "",
    expires_at: Any = None,
    kind: str = "api",
) -> tuple[str, ApiToken]:
    secret = new_token()
    token = ApiToken.objects.create(
        tenant=tenant,
        name=name,
        prefix=display_prefix(secret),
        token_hash=hash_token(secret),
        created_by=created_by,
        role=role,
        spiffe_id_prefix=spiffe_id_prefix,
        expires_at=expires_at,
        kind=kind,
    )
    return secret, token


def revoke_api_token(token_id: object, *, tenant: Tenant, actor: str) -> ApiToken:
    """Revoke one of the tenant's API tokens; from then on it authenticates nothing.

    Scoped by tenant: another tenant's token id is "not found", exactly like an unknown one.
    Revoking twice keeps the first revocation time.
    """
    connection.set_schema_to_public()
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(pk=token_id, tenant=tenant).first()
        if token is None:
            raise ApiError("not_found", "no such API token", 404)
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            record_audit(tenant=tenant, actor=actor, action="api_token.revoke", target=token.prefix)
    return token


def _unique_slug(base: str) -> str:
    """`base` slugified, or with the first free `-N` suffix: one query, however many exist."""
    slug = slugify(base)[:50].strip("-_") or "tenant"
    taken = set(
        Tenant.objects.filter(slug__regex=rf"^{re.escape(slug)}(-[0-9]+)?$").values_list(
            "slug", flat=True
        )
    )
    candidate, n = slug, 1
    while candidate in taken:  # in memory: the query above fetched every candidate taken
        n += 1
        candidate = f"{slug}-{n}"
    return candidate


def signup(  # noqa: PLR0913 - the signup form's fields
    *,
    name: str,
    trust_domain: str,
    email: str,
    password: str,
    upstream_authority: str = "",
    source: str = "",
) -> SignupResult:
    """Create the tenant, its schema, trust domain and CA, the owner and a first API token.

    All or nothing: a failure anywhere (taken name, key manager down, ...) leaves no tenant,
    schema, user or key behind.
    """
    from trustdomains import services as trustdomain_services

    domain = TrustDomain(trust_domain)  # raises InvalidTrustDomain (400)
    check_not_reserved(domain.name)  # 400 trust_domain_reserved
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(
            "weak_password", f"password must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    User = get_user_model()
    connection.set_schema_to_public()
    if Tenant.objects.filter(trust_domain=domain.name).exists():
        raise ApiError("trust_domain_taken", f"trust domain {domain.name!r} is already taken", 409)
    # A taken email must not tell a stranger that the account exists, so it answers as a
    # fresh one does: the tenant and its owner token are made. Only when the password is the
    # account's does the account become the tenant's owner (one person, several tenants);
    # otherwise the account is left untouched and the tenant has no member, only its token.
    existing = User.objects.filter(username=email.lower()).first()

    schemas.ensure_template()
    tenant_id = uuid.uuid4()
    tenant = Tenant(
        id=tenant_id,
        schema_name=f"t_{tenant_id.hex}",
        slug=_unique_slug(name or domain.name),
        name=name or domain.name,
        trust_domain=domain.name,
        migrated_to=code_fingerprint(),  # a copy of the template, which the code migrated
    )
    try:
        with transaction.atomic():
            tenant.save()
            Domain.objects.create(domain=f"{tenant.slug}.tenants.hallmark.local", tenant=tenant)
            user = _owner_account(User, existing, email=email, password=password)
            if user is not None:
                Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.OWNER)
            token = issue_api_token(tenant=tenant, created_by=user)
            schemas.create_tenant_schema(tenant.schema_name)
            with tenant_schema(tenant):
                trustdomain_services.provision_trust_domain(
                    tenant=tenant, name=domain.name, upstream_authority=upstream_authority
                )
            connection.set_schema_to_public()
            record_audit(
                tenant=tenant,
                actor=f"user:{email.lower()}",
                action="tenant.signup",
                target=domain.name,
                source=source,
            )
    except IntegrityError:
        connection.set_schema_to_public()
        _discard(tenant)
        raise ApiError(
            "trust_domain_taken", f"trust domain {domain.name!r} is already taken", 409
        ) from None
    except Exception:
        connection.set_schema_to_public()
        _discard(tenant)
        raise
    log.info("tenant %s signed up with trust domain %s", tenant.slug, domain.name)
    return SignupResult(tenant=tenant, token=token)


def _owner_account(User: Any, existing: Any, *, email: str, password: str) -> Any:  # noqa: N803
    """The signing-up account: new, or an existing one whose password matches; else None.

    Both branches hash the password once, so neither answers measurably faster.
    """
    if existing is None:
        return User.objects.create_user(username=email.lower(), email=email, password=password)
    if existing.check_password(password):
        return existing
    log.info("signup with the email of an existing account; the account was not changed")
    return None


def _discard(tenant: Tenant) -> None:
    """Compensate a failed signup outside the rolled-back transaction: keys and schema."""
    from trustdomains import services as trustdomain_services

    try:
        trustdomain_services.discard_key_material(tenant=tenant)
    except Exception:  # the original error matters more; log this one
        log.exception("could not discard key material of failed signup %s", tenant.schema_name)
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
