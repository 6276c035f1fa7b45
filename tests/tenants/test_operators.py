"""Platform operators: their own principal and tokens, the tenants API, suspension."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from tenants import operators
from tenants.models import AuditEvent, Tenant
from tests.conftest import TenantHandle
from tests.security.test_rest_matrix import ROUTES

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("seeded_plans")]
OPERATOR_ROUTES = [r for r in ROUTES if "/api/v1/operator/" in "/" + r.display]  # not the web's


@pytest.fixture
def operator() -> APIClient:
    email = f"op-{uuid.uuid4().hex[:8]}@platform.example"
    operators.create_operator(email=email, password="a long operator password")
    client = APIClient()
    client.default_format = "json"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {operators.issue_operator_token(email=email)}")
    client.email = email  # type: ignore[attr-defined]
    return client


def _path(route, tenant: TenantHandle) -> str:  # type: ignore[no-untyped-def]
    return route.path(**{k: str(tenant.tenant.id) for k in route.kwargs})


def test_the_operator_routes_are_there() -> None:
    assert {"operator-tenant-list", "operator-tenant-detail"} <= {r.name for r in OPERATOR_ROUTES}


@pytest.mark.parametrize(
    ("route", "method"),
    [(r, m) for r in OPERATOR_ROUTES for m in r.methods],
    ids=lambda v: getattr(v, "name", v),
)
def test_a_tenant_token_on_an_operator_route_is_403(
    tenant_a: TenantHandle,
    route,
    method: str,  # type: ignore[no-untyped-def]
) -> None:
    answer = getattr(tenant_a.client, method.lower())(
        _path(route, tenant_a), {"status": "suspended"}, format="json"
    )

    assert answer.status_code == 403 and answer.json()["code"] == "permission_denied"
    assert Tenant.objects.get(pk=tenant_a.tenant.pk).status == "active"


@pytest.mark.parametrize(
    ("route", "method"),
    [(r, m) for r in OPERATOR_ROUTES for m in r.methods],
    ids=lambda v: getattr(v, "name", v),
)
def test_no_or_a_forged_token_on_an_operator_route_is_401(
    tenant_a: TenantHandle,
    route,
    method: str,  # type: ignore[no-untyped-def]
) -> None:
    for header in (None, "Bearer hmo_" + uuid.uuid4().hex):
        client = APIClient()
        if header:
            client.credentials(HTTP_AUTHORIZATION=header)
        answer = getattr(client, method.lower())(_path(route, tenant_a), {}, format="json")
        assert answer.status_code == 401, answer.content


def test_an_operator_token_on_tenant_routes_is_401(operator: APIClient) -> None:
    for path in ("/api/v1/entries", "/api/v1/trust-domain", "/api/v1/api-tokens"):
        answer = operator.get(path)
        assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"


def test_operators_list_and_show_tenants(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    listed = operator.get("/api/v1/operator/tenants")
    shown = operator.get(f"/api/v1/operator/tenants/{tenant_b.tenant.id}")
    missing = operator.get(f"/api/v1/operator/tenants/{uuid.uuid4()}")

    assert listed.status_code == 200
    assert {str(tenant_a.tenant.id), str(tenant_b.tenant.id)} <= {t["id"] for t in listed.json()}
    assert shown.json()["trust_domain"] == tenant_b.trust_domain
    assert shown.json()["status"] == "active"
    assert missing.status_code == 404


def test_a_suspended_tenant_api_answers_403_and_the_other_tenant_works(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    answer = operator.patch(
        f"/api/v1/operator/tenants/{tenant_a.tenant.id}", {"status": "suspended"}
    )

    assert answer.status_code == 200 and answer.json()["status"] == "suspended"
    refused = tenant_a.client.get("/api/v1/entries")
    assert refused.status_code == 403 and refused.json()["code"] == "tenant_suspended"
    assert tenant_b.client.get("/api/v1/entries").status_code == 200
    trail = AuditEvent.objects.get(tenant=tenant_a.tenant, action="tenant.suspend")
    assert trail.actor == f"operator:{operator.email}"  # type: ignore[attr-defined]
    assert not AuditEvent.objects.filter(tenant=tenant_b.tenant, action="tenant.suspend")

    back = operator.patch(f"/api/v1/operator/tenants/{tenant_a.tenant.id}", {"status": "active"})

    assert back.status_code == 200
    assert tenant_a.client.get("/api/v1/entries").status_code == 200
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="tenant.reactivate")


def test_plan_and_quotas_are_stored(operator: APIClient, tenant_a: TenantHandle) -> None:
    path = f"/api/v1/operator/tenants/{tenant_a.tenant.id}"

    operator.patch(path, {"plan": "team", "quotas": {"max_agents": 10}})
    answer = operator.patch(path, {"quotas": {"max_entries": 500}})

    assert answer.status_code == 200
    assert answer.json()["plan"] == "team"
    assert answer.json()["quotas"] == {
        "max_agents": 10,
        "max_entries": 500,
        "max_svids_per_month": None,
    }


@pytest.mark.parametrize(
    "body",
    [{"status": "deleted"}, {"quotas": {"max_agents": -1}}, {}, {"plan": "x" * 65}],
    ids=["unknown-status", "negative-quota", "empty", "long-plan"],
)
def test_bad_tenant_changes_are_400_and_change_nothing(
    operator: APIClient, tenant_a: TenantHandle, body: dict
) -> None:
    answer = operator.patch(f"/api/v1/operator/tenants/{tenant_a.tenant.id}", body)

    assert answer.status_code == 400 and answer.json()["code"] == "invalid_request"
    stored = Tenant.objects.get(pk=tenant_a.tenant.pk)
    assert (stored.status, stored.plan, stored.quotas) == ("active", "", {})


def test_a_suspended_tenant_members_cannot_log_in(
    operator: APIClient, tenant_a: TenantHandle
) -> None:
    from tenants.models import Membership

    email = Membership.objects.get(tenant=tenant_a.tenant).user.username
    operator.patch(f"/api/v1/operator/tenants/{tenant_a.tenant.id}", {"status": "suspended"})
    client = APIClient(REMOTE_ADDR="10.9.8.7")

    answer = client.post(
        "/api/v1/auth/login",
        {"email": email, "password": "correct horse battery staple"},
        format="json",
    )

    assert answer.status_code == 403 and answer.json()["code"] == "tenant_suspended"


def test_operator_principal_is_marked_and_tenant_principal_is_not(
    operator: APIClient, tenant_a: TenantHandle
) -> None:
    from tenants.api.authentication import TenantPrincipal
    from tenants.api.operator import OperatorPrincipal

    assert OperatorPrincipal.is_platform_operator is True
    assert TenantPrincipal.is_platform_operator is False
