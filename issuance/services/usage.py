"""Gauges of the tenant's issuance rows for metering (tenants.metering.gauges calls it)."""

from __future__ import annotations

from django.utils import timezone

from issuance.models import Agent, Entry


def gauges() -> dict[str, int]:
    """Agents holding a live SVID (not banned), and registration entries, in this schema."""
    return {
        "agents_active": Agent.objects.filter(banned=False, expires_at__gt=timezone.now()).count(),
        "entries": Entry.objects.count(),
    }


def live_agents() -> int:
    """Agents that count against `max_agents`: attested, not banned, SVID not expired."""
    return Agent.objects.filter(banned=False, expires_at__gt=timezone.now()).count()
