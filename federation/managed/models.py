"""A request by one tenant to federate with another, and its outcome (public schema)."""

from __future__ import annotations

import uuid

from django.db import models


class FederationRequest(models.Model):
    """From one tenant's trust domain to another's; approved, it is a managed federation."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        ENDED = "ended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    from_tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="federation_requests_sent"
    )
    to_tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="federation_requests_received"
    )
    from_trust_domain = models.CharField(max_length=255)
    to_trust_domain = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One live request or federation per pair and direction.
            models.UniqueConstraint(
                fields=["from_tenant", "to_tenant"],
                condition=models.Q(status__in=["pending", "approved"]),
                name="one_live_federation_request_per_pair",
            )
        ]

    def __str__(self) -> str:
        return f"{self.from_trust_domain} -> {self.to_trust_domain} ({self.status})"
