"""Federation relationships: foreign trust domains whose bundles this tenant's workloads trust."""

from __future__ import annotations

import uuid

from django.db import models


class FederationRelationship(models.Model):
    """A foreign trust domain, where to refresh its bundle, and the bundle held now."""

    class Profile(models.TextChoices):
        HTTPS_WEB = "https_web"
        HTTPS_SPIFFE = "https_spiffe"
        MANAGED = "managed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    trust_domain = models.CharField(max_length=255, unique=True)
    bundle_endpoint_url = models.URLField(max_length=2048, blank=True)
    bundle_endpoint_profile = models.CharField(
        max_length=16, choices=Profile.choices, default=Profile.HTTPS_WEB
    )
    endpoint_spiffe_id = models.CharField(max_length=2048, blank=True)
    # The foreign trust domain's SPIFFE bundle (JWKS) as last set or fetched.
    bundle_json = models.JSONField(null=True, blank=True)
    bundle_sequence = models.BigIntegerField(default=0)
    bundle_updated_at = models.DateTimeField(null=True, blank=True)
    # Refresh from bundle_endpoint_url (federation.refresh): when it last ran, when it runs
    # next, what went wrong last ("" after a success) and how many failures in a row.
    last_refresh_at = models.DateTimeField(null=True, blank=True)
    next_refresh_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_error = models.TextField(blank=True)
    refresh_failures = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["trust_domain"]

    def __str__(self) -> str:
        return self.trust_domain

    @property
    def is_fetched(self) -> bool:
        """Whether its bundle is fetched from an endpoint (an https profile and a URL)."""
        return self.bundle_endpoint_profile in FETCHED_PROFILES and bool(self.bundle_endpoint_url)


# The profiles whose bundles are fetched from bundle_endpoint_url (managed ones are read live).
FETCHED_PROFILES = (
    FederationRelationship.Profile.HTTPS_WEB,
    FederationRelationship.Profile.HTTPS_SPIFFE,
)
