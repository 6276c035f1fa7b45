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

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    # Set by platform operators: a suspended tenant's API answers 403 `tenant_suspended` and
    # its agents get no new SVIDs. Plan and quotas are stored here; billing enforces them.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    plan = models.CharField(max_length=64, blank=True, default="")
    quotas = models.JSONField(default=dict, blank=True)

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
        REGISTRAR = "registrar"
        VIEWER = "viewer"
        AUDITOR = "auditor"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OWNER)
    created_at = models.DateTimeField(auto_now_add=True)
    # False while invited: an invited member holds nothing until the invitation is accepted.
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="one_membership_per_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} of {self.tenant_id}"


class ApiToken(models.Model):
    """A tenant API token: only its SHA-256 is stored; the secret is shown once.

    It acts with `role` (never above its creator's; see tenants.roles), only on entries under
    `spiffe_id_prefix` when one is set, and until `expires_at`. `created_by` is the member it
    acts for: while set, the member's current role caps the token's, and a token whose member
    left the tenant authenticates nothing.
    """

    class Kind(models.TextChoices):
        API = "api"  # made through /api/v1/api-tokens (or at signup)
        SESSION = "session"  # made by /api/v1/auth/login, ended by /logout

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
    role = models.CharField(max_length=16, choices=Membership.Role.choices, default="owner")
    spiffe_id_prefix = models.CharField(max_length=2048, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.API)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant_id})"


class Invitation(models.Model):
    """An invitation to join a tenant with a role: single-use, expiring, stored as SHA-256."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    # The invited member (inactive until accepted); removing it withdraws the invitation.
    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="+")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=16, choices=Membership.Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.tenant_id} as {self.role}"


class Operator(models.Model):
    """A platform operator: its own table, apart from tenant users (see tenants.operators)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(max_length=254, unique=True)
    password = models.CharField(max_length=256, blank=True)  # a Django password hash, or ""
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"operator {self.email}"


class OperatorToken(models.Model):
    """An operator's API token for /api/v1/operator/: SHA-256 at rest, shown once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operator = models.ForeignKey(Operator, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… (operator {self.operator_id})"


# The audit trail is its own app (tenants/audit); its model is re-exported here for callers
# that import it from tenants.models.
from tenants.audit.models import AuditEvent as AuditEvent  # noqa: E402,PLC0414
