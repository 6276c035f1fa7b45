"""Signup: one call creates tenant, schema, trust domain, CA, owner and a token shown once."""

import uuid

import pytest
from django.db import connection

from tenants.models import ApiToken, AuditEvent, Membership, Tenant
from tenants.tokens import hash_token

PASSWORD = "correct horse battery staple"


def _signup(api, trust_domain: str, email: str | None = None):
    return api.post(
        "/api/v1/signup",
        {
            "name": "Acme",
            "trust_domain": trust_domain,
            "email": email or f"ops-{uuid.uuid4().hex[:6]}@acme.test",
            "password": PASSWORD,
        },
        format="json",
    )


def _schema_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", [name])
        return cursor.fetchone() is not None


@pytest.mark.django_db(transaction=True)
def test_signup_creates_tenant_schema_trust_domain_and_a_token_stored_hashed(api) -> None:
    trust_domain = f"acme-{uuid.uuid4().hex[:6]}.test"

    response = _signup(api, trust_domain)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["trust_domain"] == trust_domain
    assert body["bundle_url"].endswith(f"/bundle/{trust_domain}")
    tenant = Tenant.objects.get(trust_domain=trust_domain)
    assert _schema_exists(tenant.schema_name)
    assert Membership.objects.filter(tenant=tenant, role="owner").count() == 1
    stored = ApiToken.objects.get(tenant=tenant)
    assert stored.token_hash == hash_token(body["token"])
    assert body["token"] not in {stored.token_hash, stored.prefix}
    assert AuditEvent.objects.filter(tenant=tenant, action="tenant.signup").exists()
    trust = api.get("/api/v1/trust-domain", HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert trust.status_code == 200 and trust.json()["name"] == trust_domain


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "bad",
    ["Acme.test", "acme.test:8443", "user@acme.test", "", "acme test", "spiffe://acme.test/x"],
)
def test_signup_with_a_malformed_trust_domain_is_400_and_leaves_nothing(api, bad: str) -> None:
    before = Tenant.objects.count()

    response = _signup(api, bad)

    assert response.status_code == 400
    assert response.json()["code"] in {"invalid_trust_domain", "invalid_request"}
    assert Tenant.objects.count() == before


@pytest.mark.django_db(transaction=True)
def test_signup_with_a_taken_trust_domain_is_409_and_leaves_nothing(api) -> None:
    trust_domain = f"taken-{uuid.uuid4().hex[:6]}.test"
    assert _signup(api, trust_domain).status_code == 201
    tenants = Tenant.objects.count()
    tokens = ApiToken.objects.count()

    response = _signup(api, trust_domain)

    assert response.status_code == 409
    assert response.json()["code"] == "trust_domain_taken"
    assert (Tenant.objects.count(), ApiToken.objects.count()) == (tenants, tokens)


def _tenant_schema_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE %s", ["t\\_%"]
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_signup_that_fails_at_the_key_manager_leaves_no_tenant_schema_or_user(
    api, vault_unreachable
) -> None:
    from django.contrib.auth import get_user_model

    trust_domain = f"novault-{uuid.uuid4().hex[:6]}.test"
    email = f"ops-{uuid.uuid4().hex[:6]}@acme.test"
    schemas_before = _tenant_schema_count()

    response = _signup(api, trust_domain, email)

    assert response.status_code == 503, response.content
    assert response.json()["code"] == "key_manager_unavailable"
    assert not Tenant.objects.filter(trust_domain=trust_domain).exists()
    assert not get_user_model().objects.filter(username=email).exists()
    assert _tenant_schema_count() == schemas_before


@pytest.mark.django_db(transaction=True)
def test_signup_rejects_a_short_password(api) -> None:
    response = api.post(
        "/api/v1/signup",
        {
            "name": "Acme",
            "trust_domain": f"pw-{uuid.uuid4().hex[:6]}.test",
            "email": "a@b.test",
            "password": "short",
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "weak_password"
