"""Public-schema models: tenants, their domains, memberships and API tokens."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Tenant(TenantMixin):
    """A customer: one PostgreSQL schema and one SPIFFE trust domain."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    trust_domain = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Fingerprint of the tenant migrations this schema has (tenants.migrating): `hallmark
    # migrate` touches only schemas whose fingerprint is not the code's.
    migrated_to = models.CharField(max_length=64, blank=True, default="")

    # Schemas are created explicitly by the signup service, inside its error handling.
    auto_create_schema = False
    auto_drop_schema = True

    def __str__(self) -> str:
        return f"{self.slug} ({self.trust_domain})"


class Domain(DomainMixin):
    """A hostname that also selects the tenant (django-tenants); tokens are the usual way."""

    def __str__(self) -> str:
        return str(self.domain)


class Membership(models.Model):
    """A user's role in a tenant."""

    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        VIEWER = "viewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OWNER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="one_membership_per_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} of {self.tenant_id}"


class ApiToken(models.Model):
    """A tenant API token: only its SHA-256 is stored; the secret is shown once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant_id})"


# The audit trail is its own app (tenants/audit); its model is re-exported here for callers
# that import it from tenants.models.
from tenants.audit.models import AuditEvent as AuditEvent  # noqa: E402,PLC0414
