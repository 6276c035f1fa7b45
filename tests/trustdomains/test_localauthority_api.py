"""Forced rotation on the REST API, as SPIRE's localauthority: prepare, activate, taint, revoke."""

from __future__ import annotations

import uuid

import pytest

from hallmark.bundle import Bundle
from hallmark.spiffeid import TrustDomain
from tenants.models import AuditEvent
from tests.conftest import make_tenant
from tests.crosstenant import assert_not_visible_to
from tests.trustdomains.changes import MODELS, ChangeListener, sequence, statuses
from trustdomains.keymanagers import get_key_manager

pytestmark = pytest.mark.django_db(transaction=True)
KINDS = ["x509", "jwt"]


def base(kind: str) -> str:
    return f"/api/v1/trust-domain/{kind}-authorities"


def post(handle, path: str):
    return handle.client.post(path, format="json")


def active_id(handle, kind: str) -> str:
    with handle.schema():
        return str(MODELS[kind].objects.get(status="active").id)


def published(handle, kind: str) -> set[str]:
    """What the bundle publishes for the kind: certificate fingerprints or kids."""
    bundle = Bundle.parse(
        TrustDomain(handle.trust_domain), handle.client.get("/api/v1/bundle").content
    )
    if kind == "x509":
        return {c.fingerprint(c.signature_hash_algorithm).hex() for c in bundle.x509_authorities}
    return {a.key_id for a in bundle.jwt_authorities}


def published_form(handle, kind: str, authority_id: str) -> str:
    with handle.schema():
        authority = MODELS[kind].objects.get(id=authority_id)
    if kind == "x509":
        cert = authority.certificate
        return cert.fingerprint(cert.signature_hash_algorithm).hex()
    return authority.key_id


@pytest.fixture
def tenant(default_key_manager):
    return make_tenant("force")


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_publishes_a_new_authority_in_the_key_manager_that_signs_nothing_yet(
    tenant, backend, kind
):
    # given the bundle as published now and a listener on the tenant's changes
    before, listener = sequence(tenant), ChangeListener(tenant.tenant.id)
    try:
        # when the tenant forces a prepare
        response = post(tenant, f"{base(kind)}/prepare")
        kinds = listener.kinds(wait=2)
    finally:
        listener.close()

    # then it answers the prepared authority, whose key is in the trust domain's key manager
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "prepared" and body["tainted"] is False
    assert {"id", "status", "tainted", "revoked", "not_after"} <= set(body)
    with tenant.schema():
        authority = MODELS[kind].objects.get(id=body["id"])
    assert authority.key_manager == backend
    assert get_key_manager(backend).signer(authority.key_ref).public_key() is not None
    # and the bundle publishes it under a higher sequence, announced as a bundle change
    assert published_form(tenant, kind, body["id"]) in published(tenant, kind)
    assert sequence(tenant) == before + 1 and kinds == ["bundle"]
    assert statuses(tenant, MODELS[kind]) == ["active", "prepared"]
    event = AuditEvent.objects.get(tenant=tenant.tenant, action=f"{kind}_authority.prepare")
    assert event.actor.startswith("token:") and event.outcome == "success"


@pytest.mark.parametrize("kind", KINDS)
def test_forced_rotation_prepare_activate_taint_revoke(tenant_a, kind):
    # given the first active authority
    first = active_id(tenant_a, kind)
    start = sequence(tenant_a)

    # when the tenant prepares and activates a successor
    prepared = post(tenant_a, f"{base(kind)}/prepare").json()["id"]
    activated = post(tenant_a, f"{base(kind)}/{prepared}/activate")

    # then the successor is active and the first is old, both published
    assert activated.status_code == 200 and activated.json()["status"] == "active"
    assert statuses(tenant_a, MODELS[kind]) == ["old", "active"]
    assert published_form(tenant_a, kind, first) in published(tenant_a, kind)

    # when the old one is tainted
    tainted = post(tenant_a, f"{base(kind)}/{first}/taint")

    # then it is marked tainted and still published
    assert tainted.status_code == 200
    assert tainted.json()["tainted"] is True and tainted.json()["status"] == "old"
    assert published_form(tenant_a, kind, first) in published(tenant_a, kind)

    # when it is revoked
    revoked = post(tenant_a, f"{base(kind)}/{first}/revoke")

    # then it leaves the bundle; each of the four steps bumped the sequence and was audited
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert published_form(tenant_a, kind, first) not in published(tenant_a, kind)
    assert sequence(tenant_a) == start + 4
    actions = list(
        AuditEvent.objects.filter(tenant=tenant_a.tenant, action__startswith=f"{kind}_authority.")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        f"{kind}_authority.{op}" for op in ("prepare", "activate", "taint", "revoke")
    ]
    listed = tenant_a.client.get("/api/v1/trust-domain").json()[f"{kind}_authorities"]
    assert [a["id"] for a in listed] == [prepared]


@pytest.mark.parametrize("kind", KINDS)
def test_operations_in_the_wrong_journal_state_answer_409_with_stable_codes(tenant_a, kind):
    # given an active authority, and after a forced rotation an old one
    first = active_id(tenant_a, kind)
    cases = [("activate", first, "authority_not_prepared"), ("taint", first, "authority_not_old")]
    for operation, authority_id, code in cases:
        # when an active authority is activated or tainted, then 409 with the code
        response = post(tenant_a, f"{base(kind)}/{authority_id}/{operation}")
        assert response.status_code == 409 and response.json()["code"] == code
    prepared = post(tenant_a, f"{base(kind)}/prepare").json()["id"]
    second = post(tenant_a, f"{base(kind)}/prepare")
    assert second.status_code == 409 and second.json()["code"] == "authority_already_prepared"
    post(tenant_a, f"{base(kind)}/{prepared}/activate")
    before = sequence(tenant_a)
    for operation, code in (
        ("revoke", "authority_not_tainted"),
        ("taint", None),
        ("taint", "authority_already_tainted"),
        ("revoke", None),
        ("revoke", "authority_already_revoked"),
        ("activate", "authority_not_prepared"),
    ):
        response = post(tenant_a, f"{base(kind)}/{first}/{operation}")
        if code is None:
            assert response.status_code == 200, response.content
        else:
            assert response.status_code == 409, response.content
            assert response.json()["code"] == code

    # and refusals change nothing (two successes bumped the sequence) but are audited
    assert sequence(tenant_a) == before + 2
    denied = AuditEvent.objects.filter(tenant=tenant_a.tenant, outcome="denied")
    assert denied.count() == 7


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("operation", ["activate", "taint", "revoke"])
def test_another_tenants_authority_is_not_found(tenant_a, tenant_b, kind, operation):
    # given tenant A's old authority after a forced rotation
    first = active_id(tenant_a, kind)
    prepared = post(tenant_a, f"{base(kind)}/prepare").json()["id"]
    post(tenant_a, f"{base(kind)}/{prepared}/activate")
    before = sequence(tenant_a)

    # when tenant B operates on A's authorities, then B gets a plain 404, as for a missing id
    for authority_id in (first, prepared):
        assert_not_visible_to(tenant_b.client, "post", f"{base(kind)}/{authority_id}/{operation}")
    missing = post(tenant_a, f"{base(kind)}/{uuid.uuid4()}/{operation}")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    # and A's journal is unchanged
    assert sequence(tenant_a) == before
    assert statuses(tenant_a, MODELS[kind]) == ["old", "active"]


@pytest.mark.parametrize("path", ["x509-authorities/prepare", "jwt-authorities/prepare"])
def test_forced_operations_need_a_tenant_token(api, path):
    response = api.post(f"/api/v1/trust-domain/{path}")
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
