"""Writes to the public schema: signup, API tokens and the audit trail."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from hallmark.spiffeid import TrustDomain
from tenants.api.errors import ApiError
from tenants.models import ApiToken, AuditEvent, Domain, Membership, Tenant
from tenants.scoping import tenant_schema
from tenants.tokens import display_prefix, hash_token, new_token

log = logging.getLogger(__name__)
MIN_PASSWORD_LENGTH = 12


def record_audit(
    *,
    tenant: Tenant | None,
    actor: str,
    action: str,
    target: str = "",
    outcome: str = "success",
    source: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an audit row (public schema), in the caller's transaction."""
    schema = connection.schema_name
    connection.set_schema_to_public()
    try:
        return AuditEvent.objects.create(
            tenant=tenant,
            tenant_slug=tenant.slug if tenant is not None else "",
            actor=actor[:300],
            action=action,
            target=target[:2100],
            outcome=outcome,
            source=source[:300],
            detail=detail or {},
        )
    finally:
        if tenant is not None and schema == tenant.schema_name:
            connection.set_tenant(tenant)
        elif schema != "public":
            connection.set_schema(schema)


@dataclass(frozen=True)
class SignupResult:
    """A new tenant and the API token shown to its owner exactly once."""

    tenant: Tenant
    token: str


def issue_api_token(*, tenant: Tenant, created_by: Any = None, name: str = "default") -> str:
    secret = new_token()
    ApiToken.objects.create(
        tenant=tenant,
        name=name,
        prefix=display_prefix(secret),
        token_hash=hash_token(secret),
        created_by=created_by,
    )
    return secret


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
    slug = slugify(base)[:50] or "tenant"
    candidate, n = slug, 1
    while Tenant.objects.filter(slug=candidate).exists():
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
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(
            "weak_password", f"password must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    User = get_user_model()
    connection.set_schema_to_public()
    if Tenant.objects.filter(trust_domain=domain.name).exists():
        raise ApiError("trust_domain_taken", f"trust domain {domain.name!r} is already taken", 409)
    if User.objects.filter(username=email.lower()).exists():
        raise ApiError(
            "email_taken", f"an account for {email!r} already exists; sign in instead", 409
        )

    tenant_id = uuid.uuid4()
    tenant = Tenant(
        id=tenant_id,
        schema_name=f"t_{tenant_id.hex}",
        slug=_unique_slug(name or domain.name),
        name=name or domain.name,
        trust_domain=domain.name,
    )
    try:
        with transaction.atomic():
            tenant.save()
            Domain.objects.create(domain=f"{tenant.slug}.tenants.hallmark.local", tenant=tenant)
            user = User.objects.create_user(username=email.lower(), email=email, password=password)
            Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.OWNER)
            token = issue_api_token(tenant=tenant, created_by=user)
            tenant.create_schema(check_if_exists=True, verbosity=0)
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


def _discard(tenant: Tenant) -> None:
    """Compensate a failed signup outside the rolled-back transaction: keys and schema."""
    from trustdomains import services as trustdomain_services

    try:
        trustdomain_services.discard_key_material(tenant=tenant)
    except Exception:  # the original error matters more; log this one
        log.exception("could not discard key material of failed signup %s", tenant.schema_name)
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
