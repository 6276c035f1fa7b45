"""Entry DNS names may not speak for another tenant's trust domain or for the platform itself.

Under a shared upstream root an SVID naming B's trust domain as DNS SAN could stand in front
of B's agents (issue 7, finding 1); one naming the platform's hosts could impersonate it.
"""

from __future__ import annotations

import pytest

from issuance.models import Entry
from tenants.models import AuditEvent
from tests.conftest import make_tenant
from tests.issuance.conftest import create_entry, entry_body

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def zoned_b(db):  # type: ignore[no-untyped-def]
    """Tenant B with a trust domain one label below a zone (b.zone-<x>.test)."""
    return make_tenant("b.zone")


def stored(handle) -> list[list[str]]:
    with handle.schema():
        return [list(e.dns_names) for e in Entry.objects.order_by("created_at")]


def post(handle, dns_names: list[str]):  # type: ignore[no-untyped-def]
    return handle.client.post(
        "/api/v1/entries", entry_body(handle, dns_names=dns_names), format="json"
    )


def test_an_entry_cannot_name_another_tenants_trust_domain(tenant_a, zoned_b):
    # when tenant A registers an entry naming B's trust domain, exactly or in another case
    for name in (zoned_b.trust_domain, zoned_b.trust_domain.upper() + "."):
        response = post(tenant_a, ["web.example.com", name])

        # then 400 dns_name_not_allowed, without saying whose it is, and nothing stored
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "dns_name_not_allowed"
        assert zoned_b.tenant.slug not in response.json()["detail"]
    assert stored(tenant_a) == []
    # and the attempts are in A's trail as denied, not in B's
    denied = AuditEvent.objects.filter(action="entry.create", outcome="denied")
    assert [e.tenant_id for e in denied] == [tenant_a.tenant.id] * 2
    assert {e.detail["code"] for e in denied} == {"dns_name_not_allowed"}
    # and the same holds the other way round
    response = post(zoned_b, [tenant_a.trust_domain])
    assert response.status_code == 400 and response.json()["code"] == "dns_name_not_allowed"


def test_a_wildcard_covering_another_tenants_trust_domain_is_refused(tenant_a, zoned_b):
    zone = zoned_b.trust_domain.split(".", 1)[1]  # zone-<x>.test

    # when A asks for *.<zone>, which matches b.<zone>
    response = post(tenant_a, [f"*.{zone}"])

    # then it is refused; a wildcard one level deeper (not matching B) is fine
    assert response.status_code == 400 and response.json()["code"] == "dns_name_not_allowed"
    assert post(tenant_a, [f"*.x.{zone}"]).status_code == 201
    assert stored(tenant_a) == [[f"*.x.{zone}"]]


def test_patch_cannot_add_another_tenants_trust_domain(tenant_a, zoned_b):
    # given an entry with an ordinary DNS name
    entry = create_entry(tenant_a, dns_names=["web.example.com"])

    # when it is changed to name B's trust domain
    response = tenant_a.client.patch(
        f"/api/v1/entries/{entry['id']}",
        {"dns_names": ["web.example.com", zoned_b.trust_domain]},
        format="json",
    )

    # then 400 and the entry is as it was
    assert response.status_code == 400 and response.json()["code"] == "dns_name_not_allowed"
    after = tenant_a.client.get(f"/api/v1/entries/{entry['id']}").json()
    assert after["dns_names"] == ["web.example.com"] and after["revision"] == entry["revision"]
    assert AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action="entry.update", outcome="denied", target=entry["id"]
    ).exists()


def test_a_wildcard_covering_the_own_trust_domain_is_reserved(db):
    own = make_tenant("own.zone")
    zone = own.trust_domain.split(".", 1)[1]
    response = post(own, [f"*.{zone}"])
    assert response.status_code == 400 and response.json()["code"] == "reserved_dns_name"


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "db.localhost",
        "127.0.0.1",
        "10.1",
        "hallmark.platform.example",
        "agents.platform.example",
        "*.platform.example",
        "console.operator.example",
    ],
)
def test_platform_names_are_refused(tenant_a, settings, name):
    # given a platform whose public hosts and operator's reserved list are these
    settings.HTTP_PUBLIC_URL = "https://hallmark.platform.example"
    settings.AGENT_ENDPOINT = "agents.platform.example:8081"
    settings.RESERVED_DNS_NAMES = ["Console.Operator.Example"]

    # when an entry names one of them, then 400 dns_name_not_allowed and nothing stored
    response = post(tenant_a, [name])
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "dns_name_not_allowed"
    assert stored(tenant_a) == []


def test_ordinary_names_are_still_accepted(tenant_a, settings):
    settings.HTTP_PUBLIC_URL = "https://hallmark.platform.example"
    response = post(tenant_a, ["web.example.com", "*.svc.example.com", "api.platform2.example"])
    assert response.status_code == 201, response.content
