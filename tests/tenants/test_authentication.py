"""Tenant API tokens: the token alone selects the tenant; anything else is a clear 401."""

import pytest


@pytest.mark.django_db
def test_tenant_calls_without_a_token_are_401_with_a_hint(api) -> None:
    response = api.get("/api/v1/trust-domain")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert "Bearer" in response.json()["detail"]


@pytest.mark.django_db
def test_unknown_token_is_401(api) -> None:
    response = api.get("/api/v1/trust-domain", HTTP_AUTHORIZATION="Bearer hm_not-a-real-token")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


@pytest.mark.django_db
def test_wrong_scheme_is_401(api) -> None:
    response = api.get("/api/v1/trust-domain", HTTP_AUTHORIZATION="Token abc")
    assert response.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_each_token_sees_its_own_trust_domain(tenant_a, tenant_b) -> None:
    assert tenant_a.client.get("/api/v1/trust-domain").json()["name"] == tenant_a.trust_domain
    assert tenant_b.client.get("/api/v1/trust-domain").json()["name"] == tenant_b.trust_domain


@pytest.mark.django_db(transaction=True)
def test_audit_events_are_per_tenant(tenant_a, tenant_b) -> None:
    events_a = tenant_a.client.get("/api/v1/audit-events").json()["results"]
    events_b = tenant_b.client.get("/api/v1/audit-events").json()["results"]
    assert any(e["target"] == tenant_a.trust_domain for e in events_a)
    assert all(e["target"] != tenant_a.trust_domain for e in events_b)


@pytest.mark.django_db(transaction=True)
def test_public_bundle_endpoint_serves_a_trust_domain_bundle_and_hides_unknown_ones(
    api, tenant_a
) -> None:
    response = api.get(f"/bundle/{tenant_a.trust_domain}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    uses = sorted(key["use"] for key in response.json()["keys"])
    assert uses == ["jwt-svid", "x509-svid"]
    assert api.get("/bundle/unknown.test").status_code == 404
    assert api.get("/bundle/Not_Valid:1").status_code == 404
