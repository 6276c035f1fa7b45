"""Managed federation between tenants: requests, decisions, both sides, push, isolation."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings

from tests.conftest import make_tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant_c(db):
    return make_tenant("c")


def _ask(handle, other):
    return handle.client.post(
        "/api/v1/federation-requests", {"trust_domain": other.trust_domain}, format="json"
    )


def _decide(handle, request_id: str, decision: str):
    return handle.client.post(f"/api/v1/federation-requests/{request_id}/{decision}")


def _relationship(handle, other):
    return handle.client.get(f"/api/v1/federation-relationships/{other.trust_domain}")


def _actions(handle) -> list[str]:
    data = handle.client.get("/api/v1/audit-events").json()
    rows = data["results"] if isinstance(data, dict) else data
    return [row["action"] for row in rows]


def test_approval_creates_both_sides_holding_each_others_public_bundle(
    tenant_a, tenant_b, tenant_c
) -> None:
    # given A asks to federate with B
    asked = _ask(tenant_a, tenant_b)
    assert asked.status_code == 201, asked.content
    request = asked.json()
    assert request["status"] == "pending"
    assert request["from_trust_domain"] == tenant_a.trust_domain
    assert request["to_trust_domain"] == tenant_b.trust_domain

    # then both see it (outgoing / incoming), and a third tenant sees nothing
    assert [r["direction"] for r in tenant_a.client.get("/api/v1/federation-requests").json()] == [
        "outgoing"
    ]
    assert [r["direction"] for r in tenant_b.client.get("/api/v1/federation-requests").json()] == [
        "incoming"
    ]
    assert tenant_c.client.get("/api/v1/federation-requests").json() == []

    # when B approves
    approved = _decide(tenant_b, request["id"], "approve")
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "approved"

    # then each side has a managed relationship holding the other's published bundle
    a_side, b_side = (
        _relationship(tenant_a, tenant_b).json(),
        _relationship(tenant_b, tenant_a).json(),
    )
    assert a_side["bundle_endpoint_profile"] == b_side["bundle_endpoint_profile"] == "managed"
    assert a_side["bundle"] == tenant_b.client.get("/api/v1/bundle").json()
    assert b_side["bundle"] == tenant_a.client.get("/api/v1/bundle").json()
    # and only public keys: no private material, nothing but the JWKS fields
    for key in a_side["bundle"]["keys"]:
        assert "d" not in key and "p" not in key
    # both trails record each step; C's records none of it
    for handle in (tenant_a, tenant_b):
        actions = _actions(handle)
        assert "federation_request.create" in actions
        assert "federation_request.approved" in actions
        assert "federation.create" in actions
    assert not [a for a in _actions(tenant_c) if a.startswith("federation")]


def test_only_the_addressed_tenant_can_approve_or_reject(tenant_a, tenant_b, tenant_c) -> None:
    request_id = _ask(tenant_a, tenant_b).json()["id"]

    # the requester cannot approve its own request; a third tenant cannot even find it
    assert _decide(tenant_a, request_id, "approve").status_code == 403
    assert _decide(tenant_a, request_id, "reject").status_code == 403
    for decision in ("approve", "reject", "cancel"):
        answer = _decide(tenant_c, request_id, decision)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    # and the addressed tenant cannot cancel (only the requester can)
    assert _decide(tenant_b, request_id, "cancel").status_code == 403
    assert _relationship(tenant_a, tenant_b).status_code == 404
    assert _relationship(tenant_b, tenant_a).status_code == 404


@pytest.mark.parametrize(("decider", "decision"), [("b", "reject"), ("a", "cancel")])
def test_rejecting_or_cancelling_leaves_no_relationship(
    tenant_a, tenant_b, decider, decision
) -> None:
    request_id = _ask(tenant_a, tenant_b).json()["id"]
    handle = tenant_b if decider == "b" else tenant_a

    answer = _decide(handle, request_id, decision)

    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == {"reject": "rejected", "cancel": "cancelled"}[decision]
    assert _relationship(tenant_a, tenant_b).status_code == 404
    assert _relationship(tenant_b, tenant_a).status_code == 404
    # a decided request cannot be approved afterwards
    late = _decide(tenant_b, request_id, "approve")
    assert late.status_code == 409 and late.json()["code"] == "federation_request_not_pending"
    # and a new request may be made
    assert _ask(tenant_a, tenant_b).status_code == 201


def test_bad_requests_are_refused_with_codes(tenant_a, tenant_b) -> None:
    assert _ask(tenant_a, tenant_a).json()["code"] == "self_federation"
    unknown = tenant_a.client.post(
        "/api/v1/federation-requests", {"trust_domain": "nobody.test"}, format="json"
    )
    assert unknown.status_code == 404
    malformed = tenant_a.client.post(
        "/api/v1/federation-requests", {"trust_domain": "NOT VALID"}, format="json"
    )
    assert malformed.status_code == 400
    assert _ask(tenant_a, tenant_b).status_code == 201
    twice = _ask(tenant_b, tenant_a)  # the reverse direction of a pending request
    assert twice.status_code == 409 and twice.json()["code"] == "federation_request_exists"
    assert _decide(tenant_b, "not-a-uuid", "approve").status_code == 404


def test_a_managed_relationship_cannot_be_made_or_patched_by_hand(tenant_a, tenant_b) -> None:
    made = tenant_a.client.post(
        "/api/v1/federation-relationships",
        {"trust_domain": tenant_b.trust_domain, "bundle_endpoint_profile": "managed"},
        format="json",
    )
    assert made.status_code == 400 and made.json()["code"] == "invalid_profile"
    request_id = _ask(tenant_a, tenant_b).json()["id"]
    _decide(tenant_b, request_id, "approve")
    patched = tenant_a.client.patch(
        f"/api/v1/federation-relationships/{tenant_b.trust_domain}",
        {"bundle_endpoint_url": "https://evil.example/"},
        format="json",
    )
    assert patched.status_code == 409 and patched.json()["code"] == "managed_relationship"


def test_a_peer_bundle_change_is_pushed_to_the_other_tenant(
    tenant_a, tenant_b, tenant_c, django_capture_on_commit_callbacks
) -> None:
    # given A and B federated (managed), and a listener on every tenant's change channel
    request_id = _ask(tenant_a, tenant_b).json()["id"]
    assert _decide(tenant_b, request_id, "approve").status_code == 200
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.psubscribe("hallmark:tenant:*:changes")
    pubsub.get_message(timeout=1)

    # when B's bundle changes (a new CA is prepared)
    with django_capture_on_commit_callbacks(execute=True):
        answer = tenant_b.client.post("/api/v1/trust-domain/x509-authorities/prepare")
    assert answer.status_code in (200, 201), answer.content

    # then A's channel gets a "federation" event (its agents resync), C's gets nothing
    events: list[tuple[str, str]] = []
    while (message := pubsub.get_message(timeout=1)) is not None:
        if message["type"] == "pmessage":
            events.append((message["channel"].decode(), json.loads(message["data"])["kind"]))
    pubsub.close()
    assert (f"hallmark:tenant:{tenant_a.tenant.id}:changes", "federation") in events
    assert not [e for e in events if str(tenant_c.tenant.id) in e[0]]
    # and A's relationship shows B's new bundle at once
    assert (
        _relationship(tenant_a, tenant_b).json()["bundle"]
        == tenant_b.client.get("/api/v1/bundle").json()
    )


def test_ending_a_federation_removes_both_sides(tenant_a, tenant_b) -> None:
    request_id = _ask(tenant_a, tenant_b).json()["id"]
    _decide(tenant_b, request_id, "approve")

    ended = tenant_b.client.delete(f"/api/v1/federation-relationships/{tenant_a.trust_domain}")

    assert ended.status_code == 204
    assert _relationship(tenant_a, tenant_b).status_code == 404
    assert _relationship(tenant_b, tenant_a).status_code == 404
    statuses = [r["status"] for r in tenant_a.client.get("/api/v1/federation-requests").json()]
    assert statuses == ["ended"]
    assert "federation_request.end" in _actions(tenant_a)
