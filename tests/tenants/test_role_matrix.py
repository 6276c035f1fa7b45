"""Roles × routes, generated from Django's URL map: every route has a decision, every role gets it.

Each authenticated tenant route declares `permission_resource`; tenants.roles.DECISIONS says
which role may read or write it. This walks every route and method, calls it with a token of
each role, and checks the answer: a refused call is 403 `permission_denied` and changes
nothing; an allowed one passes the check (it may still fail later, on a body that is empty
on purpose or an id that exists nowhere). A new route without a decision fails
`test_every_route_has_a_permission_decision`, naming it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from tenants import roles
from tenants.api.permissions import RolePermission
from tests.conftest import TenantHandle, make_tenant
from tests.crosstenant import tenant_rows
from tests.security.conftest import discard_tenant, module_db  # noqa: F401 - a fixture
from tests.security.test_rest_matrix import PUBLIC_ROUTES, ROUTES, Route

pytestmark = pytest.mark.django_db


def _permission_classes(route: Route) -> list[type]:
    cls = route.view_class
    if cls is None:
        return []
    view = cls(**getattr(route.callback, "view_initkwargs", {}))
    return [type(p) for p in view.get_permissions()]


def _is_operator_route(route: Route) -> bool:
    return "/operator/" in "/" + route.display


TENANT_ROUTES = [
    r for r in ROUTES if r.name not in PUBLIC_ROUTES and RolePermission in _permission_classes(r)
]

# An id that exists nowhere, per URL keyword: allowed object calls then answer 404.
NOWHERE = {
    "pk": lambda: str(uuid.uuid4()),
    "token_id": lambda: str(uuid.uuid4()),
    "member_id": lambda: str(2**40 + uuid.uuid4().int % 2**40),
    "authority_id": lambda: str(uuid.uuid4()),
    "request_id": lambda: str(uuid.uuid4()),
    "trust_domain": lambda: f"nowhere-{uuid.uuid4().hex[:8]}.test",
}


def test_every_route_has_a_permission_decision() -> None:
    problems = []
    for route in ROUTES:
        if route.name in PUBLIC_ROUTES or not route.is_api or route.name == "schema":
            continue
        where = f"route {route.name!r} ({route.display})"
        if _is_operator_route(route):
            continue  # operators' own check: tests/tenants/test_operators.py
        if RolePermission not in _permission_classes(route):
            problems.append(f"{where} does not use RolePermission")
            continue
        resource = getattr(route.view_class, "permission_resource", None)
        if resource not in roles.RESOURCES:
            problems.append(
                f"{where} has no permission_resource (one of tenants.roles.RESOURCES): {resource!r}"
            )
        if route.kwargs and route.kwargs[0] not in NOWHERE:
            problems.append(f"{where}: add its URL keyword {route.kwargs} to NOWHERE")
    assert not problems, "\n".join(problems)


def test_every_role_has_a_row_and_the_rows_say_design() -> None:
    assert set(roles.DECISIONS) == set(roles.ROLES)
    owner, admin = roles.grants("owner"), roles.grants("admin")
    assert owner == {(r, a) for r in roles.RESOURCES for a in (roles.READ, roles.WRITE)}
    assert owner - admin == {("members", "write"), ("billing", "write")}
    for role in ("registrar", "viewer"):
        held = roles.grants(role)
        assert not {g for g in held if g[0] in ("audit", "api_tokens")}
    assert {g for g in roles.grants("registrar") if g[1] == "write"} == {
        ("entries", "write"),
        ("join_tokens", "write"),
        ("session", "write"),
    }
    assert {g[0] for g in roles.grants("auditor") if g[0] != "session"} == {"audit", "usage"}


@dataclass
class Staff:
    handle: TenantHandle
    clients: dict[str, APIClient]


@pytest.fixture(scope="module")
def staff(module_db: None) -> Iterator[Staff]:  # noqa: F811 - the fixture imported above
    from tenants.services import issue_api_token

    handle = make_tenant("roles")
    clients = {}
    try:
        for role in roles.ROLES:
            client = APIClient()
            secret = issue_api_token(tenant=handle.tenant, name=f"{role}-token", role=role)
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
            clients[role] = client
        yield Staff(handle=handle, clients=clients)
    finally:
        discard_tenant(handle)


def _cases() -> list[tuple[Route, str, str]]:
    return [
        (route, method, role)
        for route in TENANT_ROUTES
        for method in route.methods
        for role in roles.ROLES
    ]


def _call(client: APIClient, method: str, path: str) -> Any:
    if method in ("GET", "DELETE"):
        return getattr(client, method.lower())(path)
    return getattr(client, method.lower())(path, {}, format="json")


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c[2]}: {c[1]} {c[0].name}")
def test_each_role_gets_the_decision_of_the_table(
    staff: Staff, case: tuple[Route, str, str]
) -> None:
    route, method, role = case
    resource = route.view_class.permission_resource
    allowed = roles.allows(roles.grants(role), resource, roles.access_of(method))
    path = route.path(**{k: NOWHERE[k]() for k in route.kwargs})
    before = tenant_rows(staff.handle)

    answer = _call(staff.clients[role], method, path)

    body = answer.json() if answer.get("Content-Type", "").startswith("application/json") else {}
    code = body.get("code") if isinstance(body, dict) else None
    if allowed:
        assert code != "permission_denied", f"{role} refused {method} {path}: {body}"
        assert answer.status_code != 401, answer.content[:300]
    else:
        assert answer.status_code == 403, f"{role} {method} {path}: {answer.content[:300]!r}"
        assert code == "permission_denied"
        after = tenant_rows(staff.handle)
        if method != "GET":  # a refused write leaves one `denied` row, nothing else
            denied = after.pop("tenants.AuditEvent")[len(before["tenants.AuditEvent"]) :]
            assert [(e["outcome"], e["detail"]["role"]) for e in denied] == [("denied", role)]
            before.pop("tenants.AuditEvent")
        assert after == before
