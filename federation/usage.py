"""Gauges of the tenant's federation for metering (tenants.metering.gauges calls it)."""

from __future__ import annotations

from federation.models import FederationRelationship


def gauges() -> dict[str, int]:
    return {"federation_relationships": FederationRelationship.objects.count()}
