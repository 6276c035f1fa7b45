"""The operators' per-tenant agent count: one query over every schema, banned agents left out."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from issuance.models import Agent
from issuance.services.agents import unbanned_agent_counts

pytestmark = pytest.mark.django_db


def _agents(handle, *, serving: int, banned: int) -> None:
    with handle.schema():
        for n in range(serving + banned):
            Agent.objects.create(
                spiffe_id=f"spiffe://{handle.trust_domain}/spire/agent/join_token/{n}",
                attestation_type="join_token",
                serial=f"{n:010x}",
                expires_at=timezone.now() + dt.timedelta(hours=1),
                banned=n >= serving,
            )


def test_each_tenant_counts_its_own_unbanned_agents(tenant_a, tenant_b):
    _agents(tenant_a, serving=2, banned=1)
    _agents(tenant_b, serving=3, banned=0)

    counts = unbanned_agent_counts([tenant_a.tenant, tenant_b.tenant])

    assert counts == {str(tenant_a.tenant.pk): 2, str(tenant_b.tenant.pk): 3}
    assert unbanned_agent_counts([tenant_b.tenant]) == {str(tenant_b.tenant.pk): 3}


def test_a_schema_name_outside_django_tenants_rule_is_never_queried(tenant_a):
    _agents(tenant_a, serving=1, banned=0)
    forged = type(tenant_a.tenant)(pk=tenant_a.tenant.pk, schema_name='x"; DROP TABLE y; --')

    assert unbanned_agent_counts([forged]) == {}
    assert unbanned_agent_counts([forged, tenant_a.tenant]) == {str(tenant_a.tenant.pk): 1}
    assert unbanned_agent_counts([]) == {}
