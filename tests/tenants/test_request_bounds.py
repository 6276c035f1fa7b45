"""Request bodies are bounded: too large is 413, too deep is 400, never a 500."""

from __future__ import annotations

import json

import pytest

from federation.models import FederationRelationship
from tenants.api.parsers import MAX_JSON_DEPTH
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)
DEEP = "[" * 100_000
SIGNUP = "/api/v1/signup"
FEDERATION = "/api/v1/federation-relationships"


def _raw(client, path: str, body: str | bytes, method: str = "post"):
    return getattr(client, method)(path, body, content_type="application/json")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("body", [DEEP, "{" + '"a":{' * 50_000, _nested(MAX_JSON_DEPTH + 1)])
def test_deeply_nested_json_to_signup_is_400_not_500(api, body) -> None:
    tenants = Tenant.objects.count()

    response = _raw(api, SIGNUP, body)

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_request"
    assert Tenant.objects.count() == tenants


def test_json_as_deep_as_allowed_is_parsed(api) -> None:
    response = _raw(api, SIGNUP, _nested(MAX_JSON_DEPTH))

    # parsed, then refused as a body of the wrong shape: not a parse error
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


def test_deeply_nested_json_to_a_tenant_endpoint_is_400_and_stores_nothing(tenant_a) -> None:
    response = _raw(tenant_a.client, FEDERATION, DEEP)
    nested_bundle = json.dumps({"trust_domain": "partner.test", "trust_domain_bundle": 1})
    nested_bundle = nested_bundle.replace("1}", _nested(MAX_JSON_DEPTH + 5) + "}")
    nested = _raw(tenant_a.client, FEDERATION, nested_bundle)

    assert (response.status_code, nested.status_code) == (400, 400)
    assert response.json()["code"] == nested.json()["code"] == "malformed_request"
    with tenant_a.schema():
        assert not FederationRelationship.objects.exists()


def test_a_body_over_the_limit_is_413_with_a_code(api, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    tenants = Tenant.objects.count()
    body = json.dumps({"name": "x" * 5000, "trust_domain": "big.test"})

    response = _raw(api, SIGNUP, body)

    assert response.status_code == 413, response.content
    assert response.json()["code"] == "request_too_large"
    assert Tenant.objects.count() == tenants


def test_a_tenant_call_over_the_limit_is_413_and_stores_nothing(tenant_a, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = json.dumps({"trust_domain": "partner.test", "bundle_endpoint_url": "https://x.test/"})
    body = body[:-1] + ', "padding": "' + "x" * 5000 + '"}'

    response = _raw(tenant_a.client, FEDERATION, body)

    assert response.status_code == 413, response.content
    assert response.json()["code"] == "request_too_large"
    with tenant_a.schema():
        assert not FederationRelationship.objects.exists()


def test_drfs_own_errors_carry_their_message_as_the_detail(tenant_a) -> None:
    """DRF's errors (not found, method not allowed, unsupported media type) answer with the
    stable code and the message itself, not "detail: <message>"."""
    missing = tenant_a.client.get("/api/v1/entries/00000000-0000-4000-8000-000000000000")
    wrong_method = tenant_a.client.put(FEDERATION, {}, format="json")
    wrong_type = tenant_a.client.post(FEDERATION, b"x", content_type="text/plain")

    for answer, status in ((missing, 404), (wrong_method, 405), (wrong_type, 415)):
        body = answer.json()
        assert answer.status_code == status, body
        assert set(body) == {"code", "detail"}
        assert body["detail"] and not body["detail"].startswith("detail:"), body
    assert missing.json() == {"code": "not_found", "detail": "not found"}
