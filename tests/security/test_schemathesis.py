"""schemathesis over the whole OpenAPI schema, through Django's WSGI app: no 500s, answers conform.

Every operation of `/api/v1/schema/` is a test of its own, fed a few generated requests
(deterministically: `derandomize`) with a real tenant's token; schemathesis' default checks
apply (no server error, documented status codes, content types and bodies that match).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from tests.conftest import TenantHandle, make_tenant
from tests.security.conftest import discard_tenant

pytestmark = pytest.mark.django_db
# Small, so the suite stays well under a minute; raise it for a deeper local run.
MAX_EXAMPLES = int(os.environ.get("HALLMARK_SCHEMATHESIS_EXAMPLES", "5"))
# "No 500s, answers match the schema". Left out: positive_data_acceptance (the schema does not
# spell out SPIFFE ID and trust-domain grammar, so schema-valid strings are rightly refused),
# negative_data_rejection and the stateful checks (use_after_free, ...).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def _load_schema() -> Any:
    """The schema exactly as GET /api/v1/schema/ serves it, bound to Django's WSGI app."""
    from django.test import Client

    from config.wsgi import application

    response = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200, response.content[:300]
    loaded = schemathesis.openapi.from_dict(response.json())
    loaded.app = application
    return loaded


SCHEMA = _load_schema()
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}


def _takes_input(label: str) -> bool:
    """Negative cases need something to break: a parameter or a request body."""
    operation = OPERATIONS[label]
    return any(True for _ in operation.iter_parameters()) or bool(
        operation.get_request_payload_content_types()
    )


CASES = [
    (label, mode)
    for label in sorted(OPERATIONS)
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or _takes_input(label)
]


@pytest.fixture(scope="module")
def tenant(module_db: None) -> Iterator[TenantHandle]:
    handle = make_tenant("fuzz")
    try:
        yield handle
    finally:
        discard_tenant(handle)


@pytest.fixture
def wsgi_in_test_transaction() -> Iterator[None]:
    """Keep the test's connection open across WSGI requests, as Django's test client does.

    Django's WSGI handler closes old connections when a request starts and ends; inside a
    test's transaction that would close the very connection holding it.
    """
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def test_the_schema_covers_the_api() -> None:
    paths = {label.split(" ", 1)[1] for label in OPERATIONS}
    assert {
        "/api/v1/entries",
        "/api/v1/join-tokens",
        "/api/v1/federation-relationships",
        "/api/v1/trust-domain",
        "/api/v1/bundle",
        "/api/v1/agents/{id}",
        "/api/v1/entries/batch-create",
        "/api/v1/entries/batch-update",
        "/api/v1/entries/batch-delete",
    } <= paths


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{m.value} {lb}" for lb, m in CASES])
@pytest.mark.usefixtures("wsgi_in_test_transaction")
def test_operation_answers_conform_to_the_schema(
    label: str, mode: GenerationMode, tenant: TenantHandle
) -> None:
    operation = OPERATIONS[label]
    headers = {"Authorization": f"Bearer {tenant.token}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


# Hostile inputs that random generation is unlikely to reach (a well-formed trust domain with
# a malformed bundle inside, nesting deeper than Python's recursion limit), put through the
# same operations and checks. Issue 7, finding 6: each must answer 400 with a code, not 500.
def _peer_bundle(**key: Any) -> dict[str, Any]:
    return {"keys": [{"use": "x509-svid", "kty": "EC", "crv": "P-256", **key}]}


def _own_bundle(tenant: TenantHandle, **changes: Any) -> dict[str, Any]:
    """A real, valid SPIFFE bundle (the tenant's own), with some members replaced.

    Read from the service, not through Django's test client: the client re-connects
    close_old_connections after each request, which would then close the connection holding
    the test's transaction at the next WSGI request.
    """
    from trustdomains.services import current_bundle

    with tenant.schema():
        return {**current_bundle().to_jwks(), **changes}


HOSTILE_BODIES: dict[str, tuple[str, Any]] = {
    "bundle-x5c-not-a-list": (
        "POST /api/v1/federation-relationships",
        lambda t: {
            "trust_domain": "hostile-x5c.test",
            "trust_domain_bundle": _peer_bundle(x5c=123),
        },
    ),
    "bundle-jwt-key-coordinates-not-strings": (
        "POST /api/v1/federation-relationships",
        lambda t: {
            "trust_domain": "hostile-jwk.test",
            "trust_domain_bundle": {
                "keys": [
                    {"use": "jwt-svid", "kty": "EC", "crv": "P-256", "kid": "k", "x": 1, "y": 2}
                ]
            },
        },
    ),
    "bundle-huge-sequence": (
        "POST /api/v1/federation-relationships",
        lambda t: {
            "trust_domain": "hostile-sequence.test",
            "trust_domain_bundle": _own_bundle(t, spiffe_sequence=10**30),
        },
    ),
    "signup-deeply-nested-json": ("POST /api/v1/signup", None),  # a raw body, built below
}


@pytest.mark.parametrize("name", HOSTILE_BODIES)
@pytest.mark.usefixtures("wsgi_in_test_transaction")
def test_hostile_input_answers_a_client_error(name: str, tenant: TenantHandle) -> None:
    label, body = HOSTILE_BODIES[name]
    operation = OPERATIONS[label]
    headers = {"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"}
    if body is None:
        case = operation.Case(media_type="application/json")
        raw = "[" * 100_000 + "]" * 100_000
        response = case.call(headers=headers, data=raw)
    else:
        case = operation.Case(body=body(tenant), media_type="application/json")
        response = case.call(headers=headers)

    case.validate_response(response, checks=CHECKS)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["code"], response.text[:300]
