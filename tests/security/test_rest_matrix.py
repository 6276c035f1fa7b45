"""REST attack matrix, generated from Django's URL map: every tenant route, every method.

Tenant A's token is aimed at tenant B's objects by id (read, change, delete, act on them),
A's lists are searched for anything of B's, and every tenant route is called without a token,
with malformed tokens, with B's revoked token and with the token of a deleted tenant. After
each attempt B's schema (and audit trail) is read back in B's own schema: nothing changed.

A new route is picked up on its own. A route the generator cannot classify fails
`test_every_route_is_classified` with a message naming the table to extend, so an endpoint
cannot ship without a tenant check that this matrix exercises.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.permissions import AllowAny
from rest_framework.test import APIClient

from tests.conftest import TenantHandle, make_tenant
from tests.crosstenant import (
    assert_answers_as_missing,
    assert_not_visible_to,
    identifying_values,
    tenant_rows,
)
from tests.security.conftest import revoked_token_of, token_of_deleted_tenant, two_tenants

API_PREFIX = "/api/v1/"

# Routes anyone may call: each is listed with why. Everything else must take a tenant token.
PUBLIC_ROUTES = {
    "signup": "creates a tenant; answers its first token",
    "schema": "the OpenAPI document",
    "bundle-endpoint": "SPIFFE bundles are public keys (https_web profile)",
    "healthz": "whole-plane health for load balancers",
    "readyz": "this replica's readiness",
    "auth-login": "trades an email and a password for a session token",
    "invitation-accept": "the invitation token is the credential",
    "login-page": "the web login form (session cookie + CSRF)",
    "logout-page": "ends the web session (POST with CSRF)",
}
# The web console's pages (console/urls.py): session cookie + CSRF, member and role checks of
# their own (console.access), proven by tests/console/.
CONSOLE_PREFIXES = ("console/", "operator/")

# Operator routes that take a token but refuse every tenant's (403 permission_denied), each
# with why: a tenant's token lists nothing there, its own or another's.
REFUSED_TO_TENANTS = {
    "operator-audit-events": "the platform-wide audit trail; a platform operator's only",
}


# -- the URL map, walked ---------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """One URL pattern with the HTTP methods its view answers."""

    name: str
    display: str
    kwargs: tuple[str, ...]
    methods: tuple[str, ...]
    callback: Any = field(compare=False)

    @property
    def view_class(self) -> Any:
        return getattr(self.callback, "cls", None) or getattr(self.callback, "view_class", None)

    @property
    def is_api(self) -> bool:
        return ("/" + self.display.lstrip("^")).startswith(API_PREFIX)

    def path(self, **values: str) -> str:
        return reverse(self.name, kwargs=values or None)


def _methods(callback: Any) -> tuple[str, ...]:
    actions = getattr(callback, "actions", None)
    if actions:  # a DRF viewset route: exactly the methods the router bound
        return tuple(sorted(m.upper() for m in actions))
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is None:
        return ("GET",)  # a plain function view
    names = [m for m in cls.http_method_names if m not in ("head", "options") and hasattr(cls, m)]
    return tuple(sorted(m.upper() for m in names))


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[Route]:
    for pattern in patterns:
        text = prefix + str(pattern.pattern).lstrip("^") if prefix else str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, text)
        elif isinstance(pattern, URLPattern):
            kwargs = tuple(pattern.pattern.regex.groupindex)
            yield Route(
                pattern.name or text, text, kwargs, _methods(pattern.callback), pattern.callback
            )


ROUTES = list(_walk(get_resolver().url_patterns))


def _uses_tenant_token(route: Route) -> bool:
    from tenants.api.authentication import TenantTokenAuthentication

    cls = route.view_class
    if cls is None:
        return False
    view = cls(**getattr(route.callback, "view_initkwargs", {}))
    authenticators = [type(a) for a in view.get_authenticators()]
    permissions = [type(p) for p in view.get_permissions()]
    return TenantTokenAuthentication in authenticators and AllowAny not in permissions


def is_operator_route(route: Route) -> bool:
    """A platform operator's route (/api/v1/operator/...): a tenant token there is 403."""
    from tenants.api.operator import OperatorTokenAuthentication

    cls = route.view_class
    return cls is not None and OperatorTokenAuthentication in cls.authentication_classes


TENANT_ROUTES = [r for r in ROUTES if r.name not in PUBLIC_ROUTES and _uses_tenant_token(r)]


def object_kind(route: Route) -> str | None:
    """What kind of tenant object the route's URL names, or None for a collection route."""
    if not route.kwargs:
        return None
    cls = route.view_class
    model = getattr(cls, "model", None)
    if model is not None:
        return str(model._meta.label)
    initkwargs = getattr(route.callback, "view_initkwargs", {})
    if route.kwargs == ("authority_id",) and "kind" in initkwargs:
        return f"{initkwargs['kind']}-authority"
    return None


def _cases(kind: str) -> list[tuple[Route, str]]:
    selected = []
    for route in TENANT_ROUTES:
        is_object = bool(route.kwargs)
        if (kind == "object") == is_object:
            selected += [(route, method) for method in route.methods]
    return selected


def _case_id(case: tuple[Route, str]) -> str:
    route, method = case
    return f"{method} {route.name}"


# -- the two tenants and B's objects ---------------------------------------------------------
@dataclass
class World:
    """Tenant A (the attacker), tenant B (the target), B's objects, and spent credentials."""

    a: TenantHandle
    b: TenantHandle
    targets: dict[str, str]  # object kind -> lookup value of one of B's objects
    revoked_token: str
    deleted_tenant_token: str
    b_entry: dict[str, Any]


def _b_objects(b: TenantHandle) -> tuple[dict[str, str], dict[str, Any]]:
    from issuance.models import Agent

    td = b.trust_domain
    entry = b.client.post(
        "/api/v1/entries",
        {
            "spiffe_id": f"spiffe://{td}/b-only-workload",
            "parent_id": f"spiffe://{td}/spire/agent/join_token/b-node",
            "selectors": ["unix:uid:4711"],
        },
        format="json",
    )
    assert entry.status_code == 201, entry.content
    token = b.client.post("/api/v1/join-tokens", {"ttl": 600}, format="json")
    assert token.status_code == 201, token.content
    partner = f"b-partner-{uuid.uuid4().hex[:8]}.test"
    relationship = b.client.post(
        "/api/v1/federation-relationships", {"trust_domain": partner}, format="json"
    )
    assert relationship.status_code == 201, relationship.content
    authorities = {}
    for kind in ("x509", "jwt"):
        prepared = b.client.post(f"/api/v1/trust-domain/{kind}-authorities/prepare")
        assert prepared.status_code == 201, prepared.content
        authorities[f"{kind}-authority"] = prepared.json()["id"]
    with b.schema():
        agent = Agent.objects.create(
            spiffe_id=f"spiffe://{td}/spire/agent/join_token/{token.json()['id']}",
            attestation_type="join_token",
            serial="b0b0b0b0b0",
            expires_at=timezone.now() + dt.timedelta(hours=1),
        )
    from tenants.models import ApiToken, Membership

    # B's federation request to a third tenant: A can neither see nor decide it.
    third = make_tenant("c")
    asked = b.client.post(
        "/api/v1/federation-requests", {"trust_domain": third.trust_domain}, format="json"
    )
    assert asked.status_code == 201, asked.content
    from tests.fakes.pki import TestCA, pem

    attestor = b.client.post(
        "/api/v1/node-attestors",
        {"type": "x509pop", "config": {"ca_bundle_pem": pem(TestCA("B fleet").cert)}},
        format="json",
    )
    assert attestor.status_code == 201, attestor.content
    targets = {
        "tenants.ApiToken": str(ApiToken.objects.filter(tenant=b.tenant).first().pk),  # type: ignore[union-attr]
        "tenants.Membership": str(Membership.objects.filter(tenant=b.tenant).first().pk),  # type: ignore[union-attr]
        "federation_managed.FederationRequest": asked.json()["id"],
        "issuance.NodeAttestor": attestor.json()["id"],
        "issuance.Entry": entry.json()["id"],
        "issuance.JoinToken": token.json()["id"],
        "issuance.Agent": str(agent.id),
        "federation.FederationRelationship": partner,
        "billing.Invoice": str(_b_invoice(b)),
        **authorities,
    }
    return targets, entry.json()


def _b_invoice(b: TenantHandle) -> object:
    from tenants.billing.models import Invoice

    return Invoice.objects.create(tenant=b.tenant, period="2000-01", currency="EUR").pk


@pytest.fixture(scope="module")
def world(module_db: None) -> Iterator[World]:
    with two_tenants() as (a, b):
        targets, entry = _b_objects(b)
        yield World(
            a=a,
            b=b,
            targets=targets,
            revoked_token=revoked_token_of(b),
            deleted_tenant_token=token_of_deleted_tenant(),
            b_entry=entry,
        )


# What "does not exist anywhere" looks like for each kind of object: the answer for B's object
# must be exactly this one. Extend MISSING and TARGETS (in _b_objects) for a new kind.
MISSING: dict[str, Callable[[], str]] = {
    "tenants.ApiToken": lambda: str(uuid.uuid4()),
    "tenants.Membership": lambda: str(uuid.uuid4().int % 2**62 + 2**40),
    "issuance.Entry": lambda: str(uuid.uuid4()),
    "issuance.JoinToken": lambda: str(uuid.uuid4()),
    "issuance.Agent": lambda: str(uuid.uuid4()),
    "issuance.NodeAttestor": lambda: str(uuid.uuid4()),
    "federation.FederationRelationship": lambda: f"missing-{uuid.uuid4().hex[:8]}.test",
    "federation_managed.FederationRequest": lambda: str(uuid.uuid4()),
    "x509-authority": lambda: str(uuid.uuid4()),
    "jwt-authority": lambda: str(uuid.uuid4()),
    "billing.Invoice": lambda: str(uuid.uuid4()),
}

# Bodies that would really change the object if the scoping let A reach it.
CHANGE_BODIES: dict[str, dict[str, Any]] = {
    "tenants.Membership": {"role": "viewer"},
    "issuance.Entry": {"hint": "changed-by-a", "selectors": ["unix:uid:0"]},
    "issuance.NodeAttestor": {"config": {"ca_bundle_pem": "attacker's CA"}},
    "federation.FederationRelationship": {
        "bundle_endpoint_url": "https://attacker.example/bundle",
        "bundle_endpoint_profile": "https_web",
    },
}


def _ca_pem() -> str:
    from tests.fakes.pki import TestCA, pem

    return pem(TestCA("A fleet").cert)


def _collection_writes(world: World) -> dict[tuple[str, str], tuple[dict[str, Any], set[int]]]:
    """Writes on collection routes, aimed at B where the body can name B; expected statuses."""
    b = world.b.trust_domain
    return {
        ("entry-list", "POST"): (
            {
                "spiffe_id": f"spiffe://{b}/planted-by-a",
                "parent_id": f"spiffe://{b}/spire/agent/join_token/b-node",
                "selectors": ["unix:uid:0"],
            },
            {400},
        ),
        ("join-token-list", "POST"): ({"ttl": 600, "spiffe_id": f"spiffe://{b}/b-node"}, {400}),
        ("federation-relationship-list", "POST"): (
            {"trust_domain": world.targets["federation.FederationRelationship"]},
            {201},  # A's own relationship with the same peer; B's stays as it was
        ),
        # Batch calls act on the caller's tenant only: B's ids are each that item's
        # `not_found` (BATCH_ITEM_CODES), a SPIFFE ID in B's trust domain is refused.
        ("entry-batch-create", "POST"): (
            {
                "entries": [
                    {
                        "spiffe_id": f"spiffe://{b}/planted-by-a",
                        "parent_id": f"spiffe://{b}/spire/agent/join_token/b-node",
                        "selectors": ["unix:uid:0"],
                    }
                ]
            },
            {200},
        ),
        ("entry-batch-update", "POST"): (
            {"entries": [{"id": world.b_entry["id"], **CHANGE_BODIES["issuance.Entry"]}]},
            {200},
        ),
        ("entry-batch-delete", "POST"): ({"ids": [world.b_entry["id"]]}, {200}),
        ("trust-domain", "PATCH"): ({"upstream_authority": ""}, {200}),
        # A's own token, refused: the prefix names B's trust domain.
        ("api-token-list", "POST"): (
            {"name": "a", "role": "registrar", "spiffe_id_prefix": f"spiffe://{b}/"},
            {400},
        ),
        # A's own invitation; B's members stay as they were.
        ("member-list", "POST"): ({"email": "invited-by-a@example.com", "role": "viewer"}, {201}),
        ("auth-logout", "POST"): ({}, {204}),  # A's own session ends, nothing of B's
        # A request to B is meant to reach B (its trail records it: tests/federation/
        # test_managed.py); here, one to no tenant of the platform changes nothing anywhere.
        ("federation-request-list", "POST"): ({"trust_domain": "no-such-tenant.test"}, {404}),
        # A's own attestor of the type B has; B's stays as it was
        ("node-attestor-list", "POST"): (
            {"type": "x509pop", "config": {"ca_bundle_pem": _ca_pem()}},
            {201, 409},
        ),
        ("x509-authority-prepare", "POST"): ({}, {201}),
        ("jwt-authority-prepare", "POST"): ({}, {201}),
    }


# Per-item codes the batch calls above must answer (one result per item, in order).
BATCH_ITEM_CODES: dict[str, list[str]] = {
    "entry-batch-create": ["spiffe_id_outside_trust_domain"],
    "entry-batch-update": ["not_found"],
    "entry-batch-delete": ["not_found"],
}


# -- the generator's own completeness ---------------------------------------------------------
def test_every_route_is_classified() -> None:
    problems = []
    for route in ROUTES:
        if route.name in PUBLIC_ROUTES:
            continue
        if route.display.startswith(CONSOLE_PREFIXES):
            continue  # session pages with their own checks: tests/console/
        where = f"route {route.name!r} ({route.display})"
        if not route.is_api:
            problems.append(f"{where} is outside {API_PREFIX}: list it in PUBLIC_ROUTES")
        elif is_operator_route(route):
            continue  # operator tokens only; tests/tenants/test_operators.py checks tenant tokens
        elif not _uses_tenant_token(route):
            problems.append(
                f"{where} takes no tenant token: list it in PUBLIC_ROUTES with the reason it is "
                "public, or give it TenantTokenAuthentication"
            )
        elif route.kwargs and object_kind(route) not in MISSING:
            problems.append(
                f"{where} names an object by {route.kwargs}: add its kind "
                f"({object_kind(route)!r}) to MISSING and TARGETS in {__file__}"
            )
    assert not problems, "\n".join(problems)


def test_collection_writes_are_all_listed(world: World) -> None:
    listed = _collection_writes(world)
    missing = [
        f"{method} {route.name} ({route.display})"
        for route, method in _cases("collection")
        if method != "GET" and (route.name, method) not in listed
    ]
    assert not missing, (
        "collection writes without a cross-tenant body; add them to _collection_writes in "
        f"{__file__}: {missing}"
    )


def test_the_matrix_covers_the_api() -> None:
    # a sanity floor: the walk must find the resources DESIGN.md lists
    names = {route.name for route in TENANT_ROUTES}
    assert {
        "entry-detail",
        "join-token-detail",
        "agent-detail",
        "agent-ban",
        "federation-relationship-detail",
        "trust-domain",
        "bundle",
        "audit-events",
        "x509-authority-revoke",
        "jwt-authority-activate",
    } <= names


# -- tenant A on B's objects --------------------------------------------------------------------
def _call(client: APIClient, method: str, path: str, body: Any = None) -> Any:
    if method in ("GET", "DELETE"):
        return getattr(client, method.lower())(path)
    return getattr(client, method.lower())(path, body if body is not None else {}, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize("case", _cases("object"), ids=_case_id)
def test_tenant_a_gets_not_found_for_tenant_b_objects(world: World, case: tuple[Route, str]):
    route, method = case
    kind = object_kind(route)
    assert kind in MISSING, f"unclassified route {route.name}; see test_every_route_is_classified"
    (key,) = route.kwargs
    theirs, nowhere = world.targets[kind], MISSING[kind]()
    body = CHANGE_BODIES.get(kind, {})
    before = tenant_rows(world.b)

    path, missing_path = route.path(**{key: theirs}), route.path(**{key: nowhere})

    # when A aims the call at B's object, then it gets 404 `not_found`, exactly the answer for
    # an object that exists nowhere
    assert_not_visible_to(world.a.client, method, path, body)
    assert_answers_as_missing(
        world.a.client, method, path, missing_path, body, mask=(theirs, nowhere)
    )

    # and nothing of B's changed
    assert tenant_rows(world.b) == before, f"{method} {route.name} by A changed tenant B"


@pytest.mark.django_db
@pytest.mark.parametrize("case", _cases("collection"), ids=_case_id)
def test_tenant_a_collections_show_and_change_nothing_of_tenant_b(
    world: World, case: tuple[Route, str]
):
    route, method = case
    before = tenant_rows(world.b)
    markers = identifying_values(before)

    if method == "GET":
        # when A lists, also filtering by B's own values
        b = world.b_entry
        answers = [
            _call(world.a.client, "GET", route.path()),
            _call(
                world.a.client,
                "GET",
                f"{route.path()}?spiffe_id={b['spiffe_id']}&parent_id={b['parent_id']}"
                f"&trust_domain={world.b.trust_domain}",
            ),
        ]
        markers.add(world.b.trust_domain)
        expected = {403} if route.name in REFUSED_TO_TENANTS else {200}
    else:
        body, expected = _collection_writes(world)[(route.name, method)]
        answers = [_call(world.a.client, method, route.path(), body)]

    # then A gets its own answer, with no id, key or name of B's in it, and B is unchanged
    for answer in answers:
        assert answer.status_code in expected, answer.content[:300]
        text = answer.content.decode(errors="replace")
        leaked = sorted(m for m in markers if m in text)
        assert not leaked, f"{method} {route.name} by A shows B's {leaked}"
        if route.name in BATCH_ITEM_CODES:
            codes = [r["status"]["code"] for r in answer.json()["results"]]
            assert codes == BATCH_ITEM_CODES[route.name], answer.content[:300]
    assert tenant_rows(world.b) == before, f"{method} {route.name} by A changed tenant B"


# -- no, bad, revoked and foreign tokens ---------------------------------------------------------
CREDENTIALS: dict[str, Callable[[World], str | None]] = {
    "no-header": lambda w: None,
    "bearer-without-token": lambda w: "Bearer",
    "other-scheme": lambda w: f"Token {w.b.token}",
    "forged-token": lambda w: "Bearer hm_" + uuid.uuid4().hex,
    "revoked-token-of-b": lambda w: f"Bearer {w.revoked_token}",
    "token-of-deleted-tenant": lambda w: f"Bearer {w.deleted_tenant_token}",
}


def _auth_cases() -> list[tuple[Route, str, str]]:
    return [
        (route, method, credential)
        for route, method in _cases("object") + _cases("collection")
        for credential in CREDENTIALS
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("case", _auth_cases(), ids=lambda c: f"{c[2]}: {c[1]} {c[0].name}")
def test_calls_without_a_valid_tenant_token_are_401_and_change_nothing(
    world: World, case: tuple[Route, str, str]
):
    route, method, credential = case
    kind = object_kind(route)
    path = route.path(**{route.kwargs[0]: world.targets[kind]}) if kind else route.path()
    client = APIClient()
    header = CREDENTIALS[credential](world)
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    body = CHANGE_BODIES.get(kind or "", {})
    if not kind and method != "GET":
        body = _collection_writes(world).get((route.name, method), ({}, set()))[0]
    before = tenant_rows(world.b)

    answer = _call(client, method, path, body)

    assert answer.status_code == 401, f"{credential} {method} {path}: {answer.content[:300]!r}"
    assert answer.json()["code"] in ("not_authenticated", "authentication_failed", "invalid_token")
    assert answer["WWW-Authenticate"] == "Bearer"
    assert tenant_rows(world.b) == before
