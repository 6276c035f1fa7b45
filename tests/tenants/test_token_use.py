"""How a tenant API token is presented and what using it records.

Written to kill the mutants `make mutation` found surviving in tenants/api/authentication.py.
"""

from __future__ import annotations

import pytest
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from tenants import services
from tenants.api.authentication import TenantTokenAuthentication
from tenants.models import ApiToken
from tenants.tokens import hash_token
from tests.conftest import TenantHandle


def _token(secret: str) -> ApiToken:
    return ApiToken.objects.get(token_hash=hash_token(secret))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheme", ["Token", "Basic", "JWT"])
def test_a_valid_token_under_another_scheme_than_bearer_is_refused(
    tenant_a: TenantHandle, scheme: str
) -> None:
    # given a valid token, sent under another scheme
    response = APIClient().get(
        "/api/v1/trust-domain", HTTP_AUTHORIZATION=f"{scheme} {tenant_a.token}"
    )

    # then it authenticates nothing, and the answer says how to send it
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    assert "Bearer" in response.json()["detail"]


@pytest.mark.django_db
def test_a_bearer_header_without_a_token_names_the_expected_form(api: APIClient) -> None:
    response = api.get("/api/v1/trust-domain", HTTP_AUTHORIZATION="Bearer    ")

    assert response.status_code == 401
    assert "Bearer <token>" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_using_a_token_stamps_its_last_use_and_no_other_tokens(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    # given a second, unused token of tenant A, and tenant B's token
    unused = services.issue_api_token(tenant=tenant_a.tenant, name="unused")

    # when tenant A's first token is used
    assert tenant_a.client.get("/api/v1/trust-domain").status_code == 200

    # then that token shows it was used, and neither A's other token nor B's token does
    assert _token(tenant_a.token).last_used_at is not None
    assert _token(unused).last_used_at is None
    assert _token(tenant_b.token).last_used_at is None


@pytest.mark.django_db(transaction=True)
def test_the_principal_behind_a_token_is_its_tenant_and_reads_as_its_prefix(
    tenant_a: TenantHandle,
) -> None:
    request = Request(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {tenant_a.token}"))

    user, token = TenantTokenAuthentication().authenticate(request)  # type: ignore[misc]

    assert user.tenant == tenant_a.tenant
    assert str(user) == f"token:{token.prefix}" == request._request.actor


@pytest.mark.django_db(transaction=True)
def test_last_use_is_stamped_once_a_minute_not_in_a_commit_of_every_request(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    import datetime as dt

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    def stamps(handle: TenantHandle) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert handle.client.get("/api/v1/trust-domain").status_code == 200
        return sum('UPDATE "tenants_apitoken"' in q["sql"] for q in queries.captured_queries)

    # given A's token used just now
    first = stamps(tenant_a)
    stamped = _token(tenant_a.token).last_used_at

    # when it is used again within the minute, then nothing is written
    assert (first, stamps(tenant_a)) == (1, 0)
    assert _token(tenant_a.token).last_used_at == stamped

    # when its last use is over a minute old, then the next use stamps it again
    ApiToken.objects.filter(token_hash=hash_token(tenant_a.token)).update(
        last_used_at=timezone.now() - dt.timedelta(seconds=61)
    )
    assert stamps(tenant_a) == 1
    assert _token(tenant_a.token).last_used_at > stamped
    # and B's token, never used, is stamped on its first use whatever A's state
    assert stamps(tenant_b) == 1
