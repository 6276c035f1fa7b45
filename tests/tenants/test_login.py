"""Login and logout: session tokens, one answer for every bad credential, failure limits,
Argon2 hashes, the /login form page, and the audit rows."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from tenants.models import ApiToken, AuditEvent, Membership
from tests.conftest import TenantHandle, make_tenant

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"  # make_tenant's owner password


def _owner_email(handle: TenantHandle) -> str:
    return Membership.objects.get(tenant=handle.tenant, role="owner").user.username


def _address() -> str:
    """A client address of the test's own, so failure counts of other tests do not add up."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def _api() -> APIClient:
    client = APIClient(REMOTE_ADDR=_address())
    client.default_format = "json"
    return client


def test_login_answers_a_session_token_for_the_tenant(tenant_a: TenantHandle) -> None:
    email = _owner_email(tenant_a)

    answer = _api().post("/api/v1/auth/login", {"email": email, "password": PASSWORD})

    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["role"] == "owner" and body["tenant"]["slug"] == tenant_a.tenant.slug
    assert body["expires_at"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert client.get("/api/v1/entries").status_code == 200
    token = ApiToken.objects.get(prefix=body["token"][:9], tenant=tenant_a.tenant)
    assert token.kind == "session" and token.expires_at is not None
    assert AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action="auth.login", outcome="success", actor=f"user:{email}"
    ).exists()


def test_logout_revokes_the_session_token_at_once(tenant_a: TenantHandle) -> None:
    login = _api().post(
        "/api/v1/auth/login", {"email": _owner_email(tenant_a), "password": PASSWORD}
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login.json()['token']}")

    assert client.post("/api/v1/auth/logout").status_code == 204

    answer = client.get("/api/v1/entries")
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"
    assert tenant_a.client.get("/api/v1/entries").status_code == 200  # other tokens live on


def test_unknown_email_and_wrong_password_answer_the_same(tenant_a: TenantHandle) -> None:
    email = _owner_email(tenant_a)

    wrong = _api().post("/api/v1/auth/login", {"email": email, "password": "not it at all!"})
    unknown = _api().post(
        "/api/v1/auth/login", {"email": f"nobody-{uuid.uuid4().hex}@example.com", "password": "x"}
    )

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "invalid_credentials"
    failures = AuditEvent.objects.filter(action="auth.login", outcome="failure")
    assert failures.filter(actor=f"user:{email}", tenant=tenant_a.tenant).exists()
    assert not failures.filter(detail__icontains="not it at all").exists()


def test_a_user_of_several_tenants_names_one(tenant_a: TenantHandle) -> None:
    email = _owner_email(tenant_a)
    other = make_tenant("second")
    user = get_user_model().objects.get(username=email)
    Membership.objects.create(user=user, tenant=other.tenant, role="viewer")
    client = _api()

    unnamed = client.post("/api/v1/auth/login", {"email": email, "password": PASSWORD})
    by_slug = client.post(
        "/api/v1/auth/login",
        {"email": email, "password": PASSWORD, "tenant": other.tenant.slug},
    )
    by_domain = client.post(
        "/api/v1/auth/login",
        {"email": email, "password": PASSWORD, "tenant": tenant_a.trust_domain},
    )
    stranger = client.post(
        "/api/v1/auth/login",
        {"email": email, "password": PASSWORD, "tenant": "not-a-tenant-of-mine"},
    )

    assert unnamed.status_code == 400 and unnamed.json()["code"] == "tenant_required"
    assert tenant_a.tenant.slug not in unnamed.content.decode()
    assert by_slug.json()["role"] == "viewer"
    assert by_slug.json()["tenant"]["id"] == str(other.tenant.id)
    assert by_domain.json()["role"] == "owner"
    assert stranger.status_code == 403 and stranger.json()["code"] == "not_a_member"


def test_failed_logins_are_limited_per_account(tenant_a: TenantHandle, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_RATE_LIMIT = "3/600"
    email = _owner_email(tenant_a)
    for _ in range(3):  # from three addresses: the account's count still adds up
        assert (
            _api().post("/api/v1/auth/login", {"email": email, "password": "no"}).status_code == 401
        )

    limited = _api().post("/api/v1/auth/login", {"email": email, "password": PASSWORD})

    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert int(limited["Retry-After"]) > 0


def test_failed_logins_are_limited_per_address(tenant_a: TenantHandle, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_RATE_LIMIT = "3/600"
    client = _api()
    for _ in range(3):  # three different unknown accounts, one address
        answer = client.post(
            "/api/v1/auth/login", {"email": f"x{uuid.uuid4().hex}@example.com", "password": "no"}
        )
        assert answer.status_code == 401

    limited = client.post(
        "/api/v1/auth/login", {"email": _owner_email(tenant_a), "password": PASSWORD}
    )

    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert (
        _api()
        .post("/api/v1/auth/login", {"email": _owner_email(tenant_a), "password": PASSWORD})
        .status_code
        == 200
    )


def test_passwords_are_hashed_with_argon2(settings) -> None:  # type: ignore[no-untyped-def]
    from config import settings as production

    settings.PASSWORD_HASHERS = production.PRODUCTION_PASSWORD_HASHERS
    user = get_user_model()(username=f"argon-{uuid.uuid4().hex}@example.com")

    user.set_password(PASSWORD)

    assert user.password.startswith("argon2$")
    assert user.check_password(PASSWORD)


def test_the_login_page_signs_in_with_a_session_and_csrf(tenant_a: TenantHandle) -> None:
    email = _owner_email(tenant_a)
    browser = Client(enforce_csrf_checks=True, REMOTE_ADDR=_address())

    page = browser.get("/login")
    csrf = page.cookies["csrftoken"].value
    without_csrf = Client(enforce_csrf_checks=True).post(
        "/login", {"email": email, "password": PASSWORD}
    )
    wrong = browser.post(
        "/login", {"email": email, "password": "wrong password", "csrfmiddlewaretoken": csrf}
    )
    signed_in = browser.post(
        "/login", {"email": email, "password": PASSWORD, "csrfmiddlewaretoken": csrf}
    )

    assert page.status_code == 200 and b'name="password"' in page.content
    assert without_csrf.status_code == 403
    assert wrong.status_code == 401 and b"Wrong email or password" in wrong.content
    assert signed_in.status_code == 302
    assert "sessionid" in browser.cookies
    assert f"Signed in as {email}".encode() in browser.get("/login").content
    assert AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action="auth.login", detail__via="web"
    ).exists()
