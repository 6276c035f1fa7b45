"""Forced prepares cannot make keys without bound: a cap on authorities held, a rate an hour.

Each prepare creates a key in the trust domain's key manager; a tenant looping prepare →
activate (→ taint → revoke) must hit a wall with a stable code, and only its own (issue 7,
finding 7).
"""

from __future__ import annotations

import pytest

from tenants.models import AuditEvent
from tests.trustdomains.changes import MODELS

pytestmark = pytest.mark.django_db(transaction=True)
KINDS = ["x509", "jwt"]


def base(kind: str) -> str:
    return f"/api/v1/trust-domain/{kind}-authorities"


def post(handle, path: str):  # type: ignore[no-untyped-def]
    return handle.client.post(path, format="json")


def rotate(handle, kind: str) -> str:
    """Prepare and activate a successor; returns the id of the authority made old."""
    with handle.schema():
        old = str(MODELS[kind].objects.get(status="active").id)
    prepared = post(handle, f"{base(kind)}/prepare")
    assert prepared.status_code == 201, prepared.content
    assert post(handle, f"{base(kind)}/{prepared.json()['id']}/activate").status_code == 200
    return old


def held(handle, kind: str) -> int:
    with handle.schema():
        return MODELS[kind].objects.count()


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_past_the_cap_is_refused_and_revoking_frees_no_slot(
    tenant_a, tenant_b, settings, kind
):
    # given a cap of 3 authorities and a tenant that rotated twice (3 held), then tainted and
    # revoked the first one (revoked keys stay held until pruned)
    settings.MAX_AUTHORITIES, settings.FORCED_PREPARES_PER_HOUR = 3, 100
    first = rotate(tenant_a, kind)
    rotate(tenant_a, kind)
    assert post(tenant_a, f"{base(kind)}/{first}/taint").status_code == 200
    assert post(tenant_a, f"{base(kind)}/{first}/revoke").status_code == 200
    assert held(tenant_a, kind) == 3

    # when it forces another prepare
    response = post(tenant_a, f"{base(kind)}/prepare")

    # then 409 too_many_authorities, nothing created, the refusal audited
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "too_many_authorities"
    assert held(tenant_a, kind) == 3
    denied = AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action=f"{kind}_authority.prepare", outcome="denied"
    )
    assert [e.detail["code"] for e in denied] == ["too_many_authorities"]
    # and tenant B, holding one, still may
    assert post(tenant_b, f"{base(kind)}/prepare").status_code == 201


@pytest.mark.parametrize("kind", KINDS)
def test_forced_prepares_are_rate_limited_per_tenant_and_kind(tenant_a, tenant_b, settings, kind):
    # given at most 2 forced prepares an hour, both used by tenant A
    settings.MAX_AUTHORITIES, settings.FORCED_PREPARES_PER_HOUR = 100, 2
    rotate(tenant_a, kind)
    rotate(tenant_a, kind)
    before = held(tenant_a, kind)

    # when it forces a third
    response = post(tenant_a, f"{base(kind)}/prepare")

    # then 429 rotation_rate_limited with a Retry-After within the hour; nothing created
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "rotation_rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert held(tenant_a, kind) == before
    assert AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action=f"{kind}_authority.prepare", outcome="denied"
    ).exists()
    # and neither tenant B nor A's other kind is held back by A's prepares
    assert post(tenant_b, f"{base(kind)}/prepare").status_code == 201
    other = "jwt" if kind == "x509" else "x509"
    assert post(tenant_a, f"{base(other)}/prepare").status_code == 201
