"""One row per fetched relationship of any tenant, in the public schema (federation.schedule)."""

from __future__ import annotations

from django.db import models


class ScheduledRefresh(models.Model):
    """A relationship with a bundle endpoint and when it is due, mirrored from its tenant's
    schema so that the sweep reads one table instead of visiting every schema."""

    # The relationship's own id (a random UUID, unique across tenants as well).
    relationship_id = models.UUIDField(primary_key=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    trust_domain = models.CharField(max_length=255)
    # The relationship's next_refresh_at, always the same value (None: due at the next sweep).
    next_refresh_at = models.DateTimeField(null=True, blank=True)
    # Set when a sweep queues the refresh, cleared when the refresh is stored: a refresh still
    # in the queue is not queued again by the next sweep. Not a copy of the relationship's.
    queued_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["next_refresh_at"], name="scheduled_refresh_due")]

    def __str__(self) -> str:
        return f"{self.trust_domain} of {self.tenant_id} at {self.next_refresh_at}"
