"""API tokens: made (secret once, hash at rest), listed, revoked; roles, prefixes, expiry."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import ApiToken
from tenants.tokens import hash_token
from tests.conftest import TenantHandle

pytestmark = pytest.mark.django_db


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _make(handle: TenantHandle, **body: object) -> dict:
    answer = handle.client.post("/api/v1/api-tokens", {"name": "ci", **body}, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()


def test_a_new_token_is_shown_once_and_stored_as_its_hash(tenant_a: TenantHandle) -> None:
    made = _make(tenant_a, role="viewer")

    assert made["token"].startswith(made["prefix"])
    stored = ApiToken.objects.get(pk=made["id"])
    assert stored.token_hash == hash_token(made["token"])
    assert made["token"] not in str(ApiToken.objects.filter(pk=made["id"]).values().first())
    listed = tenant_a.client.get("/api/v1/api-tokens").json()
    row = next(t for t in listed if t["id"] == made["id"])
    assert row["role"] == "viewer" and row["prefix"] == made["prefix"]
    assert {"created_at", "last_used_at", "expires_at"} <= set(row)
    assert made["token"] not in str(listed) and "token_hash" not in row


def test_the_token_acts_with_its_role(tenant_a: TenantHandle) -> None:
    viewer = _client(_make(tenant_a, role="viewer")["token"])

    assert viewer.get("/api/v1/entries").status_code == 200
    refused = viewer.post("/api/v1/join-tokens", {"ttl": 600}, format="json")
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"


def test_a_revoked_token_is_refused_at_once(tenant_a: TenantHandle) -> None:
    made = _make(tenant_a, role="admin")
    client = _client(made["token"])
    assert client.get("/api/v1/entries").status_code == 200

    assert tenant_a.client.delete(f"/api/v1/api-tokens/{made['id']}").status_code == 204

    answer = client.get("/api/v1/entries")
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"
    listed = tenant_a.client.get("/api/v1/api-tokens").json()
    assert made["id"] not in {t["id"] for t in listed}


def test_an_expired_token_is_refused(tenant_a: TenantHandle) -> None:
    made = _make(tenant_a, role="admin", expires_at=(timezone.now() + dt.timedelta(hours=1)))
    client = _client(made["token"])
    assert client.get("/api/v1/entries").status_code == 200

    ApiToken.objects.filter(pk=made["id"]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    answer = client.get("/api/v1/entries")
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"role": "superuser"}, 400, "unknown_role"),
        ({"role": "registrar", "spiffe_id_prefix": "payments/"}, 400, "invalid_spiffe_id_prefix"),
        (
            {"role": "registrar", "spiffe_id_prefix": "spiffe://elsewhere.test/payments/"},
            400,
            "spiffe_id_outside_trust_domain",
        ),
        ({"role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}, 400, "invalid_expiry"),
    ],
    ids=["unknown-role", "prefix-not-spiffe-id", "prefix-other-trust-domain", "expiry-past"],
)
def test_bad_token_requests_are_refused_and_store_nothing(
    tenant_a: TenantHandle, body: dict, status: int, code: str
) -> None:
    before = ApiToken.objects.filter(tenant=tenant_a.tenant).count()

    answer = tenant_a.client.post("/api/v1/api-tokens", {"name": "bad", **body}, format="json")

    assert answer.status_code == status, answer.content
    assert answer.json()["code"] == code
    assert ApiToken.objects.filter(tenant=tenant_a.tenant).count() == before


def test_a_token_cannot_make_a_token_above_its_own_role(tenant_a: TenantHandle) -> None:
    admin = _client(_make(tenant_a, role="admin")["token"])

    answer = admin.post("/api/v1/api-tokens", {"name": "up", "role": "owner"}, format="json")

    assert answer.status_code == 403 and answer.json()["code"] == "permission_denied"
    same = admin.post("/api/v1/api-tokens", {"name": "ok", "role": "viewer"}, format="json")
    assert same.status_code == 201


def test_tokens_of_another_tenant_are_neither_listed_nor_revocable(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    theirs = _make(tenant_b, role="viewer")

    listed = tenant_a.client.get("/api/v1/api-tokens").json()
    revoke = tenant_a.client.delete(f"/api/v1/api-tokens/{theirs['id']}")

    assert theirs["id"] not in {t["id"] for t in listed}
    assert revoke.status_code == 404 and revoke.json()["code"] == "not_found"
    assert _client(theirs["token"]).get("/api/v1/entries").status_code == 200


def test_the_signup_token_is_an_owner_token(tenant_a: TenantHandle) -> None:
    stored = ApiToken.objects.get(token_hash=hash_token(tenant_a.token))

    assert stored.role == "owner" and stored.kind == "api"
    assert tenant_a.client.get("/api/v1/members").status_code == 200  # owners only may write
    invite = tenant_a.client.post(
        "/api/v1/members", {"email": "new@example.com", "role": "viewer"}, format="json"
    )
    assert invite.status_code == 201
