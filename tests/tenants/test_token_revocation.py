"""A revoked API token authenticates nothing; revocation is scoped to the token's tenant."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tenants import services
from tenants.api.errors import ApiError
from tenants.models import ApiToken, AuditEvent
from tenants.tokens import hash_token
from tests.conftest import TenantHandle


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _token_id(secret: str) -> object:
    return ApiToken.objects.get(token_hash=hash_token(secret)).pk


@pytest.mark.django_db(transaction=True)
def test_a_revoked_token_is_401_invalid_token(tenant_a: TenantHandle) -> None:
    # given a second token of tenant A that works
    secret = services.issue_api_token(tenant=tenant_a.tenant, name="ci")
    assert _client(secret).get("/api/v1/trust-domain").status_code == 200

    # when it is revoked
    services.revoke_api_token(_token_id(secret), tenant=tenant_a.tenant, actor="test")

    # then it is refused, with the code the API promises for a revoked token
    response = _client(secret).get("/api/v1/trust-domain")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    # and writes are refused too, not only reads
    refused = _client(secret).post("/api/v1/join-tokens", {"ttl": 600}, format="json")
    assert refused.status_code == 401
    # and the tenant's other token still works: one token was revoked, not the tenant
    assert tenant_a.client.get("/api/v1/trust-domain").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_revocation_is_recorded_in_the_tenants_audit_trail(tenant_a: TenantHandle) -> None:
    secret = services.issue_api_token(tenant=tenant_a.tenant, name="ci")
    token = services.revoke_api_token(_token_id(secret), tenant=tenant_a.tenant, actor="test")

    event = AuditEvent.objects.get(action="api_token.revoke")
    assert (event.tenant_id, event.actor, event.target) == (
        tenant_a.tenant.pk,
        "test",
        token.prefix,
    )


@pytest.mark.django_db(transaction=True)
def test_revoking_twice_keeps_the_first_revocation(tenant_a: TenantHandle) -> None:
    secret = services.issue_api_token(tenant=tenant_a.tenant, name="ci")
    first = services.revoke_api_token(_token_id(secret), tenant=tenant_a.tenant, actor="test")
    again = services.revoke_api_token(_token_id(secret), tenant=tenant_a.tenant, actor="test")

    assert again.revoked_at == first.revoked_at
    assert _client(secret).get("/api/v1/trust-domain").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_tenant_cannot_revoke_another_tenants_token(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    # given tenant A's token id
    token_id = _token_id(tenant_a.token)

    # when tenant B tries to revoke it
    with pytest.raises(ApiError) as raised:
        services.revoke_api_token(token_id, tenant=tenant_b.tenant, actor="test")

    # then it is "not found", as an unknown id is, and A's token keeps working
    assert (raised.value.status_code, raised.value.error_code) == (404, "not_found")
    assert ApiToken.objects.get(pk=token_id).revoked_at is None
    assert tenant_a.client.get("/api/v1/trust-domain").status_code == 200
