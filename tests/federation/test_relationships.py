"""Federation relationships: a foreign bundle set through the API, scoped to one tenant."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings

from federation.services import federated_bundles
from tests.crosstenant import assert_not_visible_to

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/api/v1/federation-relationships"


def _foreign_bundle(tenant) -> dict:
    """A real SPIFFE bundle: another tenant's, as its bundle endpoint serves it."""
    return tenant.client.get("/api/v1/bundle").json()


def test_relationship_with_a_bundle_set_directly_is_stored_and_served_to_agents(
    tenant_a, tenant_b
) -> None:
    bundle = _foreign_bundle(tenant_b)

    response = tenant_a.client.post(
        PATH, {"trust_domain": tenant_b.trust_domain, "trust_domain_bundle": bundle}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["bundle"] == bundle
    with tenant_a.schema():
        held = federated_bundles([tenant_b.trust_domain, "unknown.test"])
    assert list(held) == [tenant_b.trust_domain]
    assert held[tenant_b.trust_domain].x509_authorities  # parsed, usable by agents
    listed = tenant_a.client.get(PATH).json()
    assert [r["trust_domain"] for r in listed] == [tenant_b.trust_domain]


def test_relationship_is_read_patched_and_deleted_by_trust_domain_name(tenant_a, tenant_b) -> None:
    tenant_a.client.post(PATH, {"trust_domain": tenant_b.trust_domain}, format="json")
    item = f"{PATH}/{tenant_b.trust_domain}"

    patched = tenant_a.client.patch(
        item, {"trust_domain_bundle": _foreign_bundle(tenant_b)}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["bundle_sequence"] >= 1
    assert tenant_a.client.delete(item).status_code == 204
    assert tenant_a.client.get(item).status_code == 404


def test_another_tenant_cannot_see_or_change_the_relationship(tenant_a, tenant_b) -> None:
    tenant_a.client.post(PATH, {"trust_domain": "partner.test"}, format="json")
    item = f"{PATH}/partner.test"

    assert tenant_b.client.get(PATH).json() == []
    assert_not_visible_to(tenant_b.client, "GET", item)
    assert_not_visible_to(tenant_b.client, "PATCH", item, {"bundle_endpoint_url": "https://x.test"})
    assert_not_visible_to(tenant_b.client, "DELETE", item)
    assert tenant_a.client.get(item).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"trust_domain": "Partner.test"}, "invalid_trust_domain"),
        (
            {"trust_domain": "partner.test", "trust_domain_bundle": {"keys": "nope"}},
            "invalid_bundle",
        ),
        ({"trust_domain": "partner.test", "trust_domain_bundle": {"keys": []}}, "invalid_bundle"),
        ({"trust_domain": "partner.test", "trust_domain_bundle": "not json"}, "invalid_bundle"),
        (
            {"trust_domain": "partner.test", "bundle_endpoint_profile": "https_spiffe"},
            "invalid_profile",
        ),
        ({"trust_domain": "partner.test", "bundle_endpoint_url": "not a url"}, "invalid_request"),
    ],
)
def test_bad_relationships_are_refused_and_nothing_is_stored(tenant_a, body, code) -> None:
    response = tenant_a.client.post(PATH, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert tenant_a.client.get(PATH).json() == []


def test_federating_with_itself_or_twice_is_refused(tenant_a) -> None:
    itself = tenant_a.client.post(PATH, {"trust_domain": tenant_a.trust_domain}, format="json")
    assert itself.status_code == 400 and itself.json()["code"] == "self_federation"
    assert (
        tenant_a.client.post(PATH, {"trust_domain": "partner.test"}, format="json").status_code
        == 201
    )
    again = tenant_a.client.post(PATH, {"trust_domain": "partner.test"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "federation_relationship_exists"


def test_a_change_is_announced_to_agents_after_commit(tenant_a) -> None:
    listener = redis.Redis.from_url(settings.REDIS_URL).pubsub()
    listener.subscribe(f"hallmark:tenant:{tenant_a.tenant.id}:changes")
    listener.get_message(timeout=2)  # the subscribe confirmation

    tenant_a.client.post(PATH, {"trust_domain": "partner.test"}, format="json")

    message = listener.get_message(timeout=5)
    assert message is not None and json.loads(message["data"])["kind"] == "federation"
    listener.close()
