"""Foreign bundles at the REST edge: 400 with a code for bad ones, agents served the good ones."""

from __future__ import annotations

import pytest

from federation.models import FederationRelationship
from hallmark.bundle import MAX_INT64, Bundle
from hallmark.spiffeid import TrustDomain
from tests.hallmark.foreign_keys import ca_certificate, jwt_jwk, x509_jwk
from tests.issuance.agent_steps import attested
from tests.issuance.conftest import agent_api, create_entry  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/api/v1/federation-relationships"
PARTNER = "partner.test"


def _post(handle, bundle):
    return handle.client.post(
        PATH, {"trust_domain": PARTNER, "trust_domain_bundle": bundle}, format="json"
    )


@pytest.mark.parametrize(
    ("bundle", "code"),
    [
        ({"keys": [{"use": "x509-svid", "x5c": 123}]}, "invalid_bundle"),
        ({"keys": [{**jwt_jwk("ec-p256"), "x": 12345}]}, "invalid_bundle"),
        ({"keys": [{**jwt_jwk("ec-p256"), "crv": ["P-256"]}]}, "unsupported_key_type"),
        ({"keys": [jwt_jwk("ec-p256")], "spiffe_sequence": MAX_INT64 + 1}, "invalid_bundle"),
        ({"keys": [jwt_jwk("ec-p256")], "spiffe_sequence": 10**30}, "invalid_bundle"),
        ([jwt_jwk("ec-p256")], "invalid_bundle"),
        ("[" * 5000, "invalid_bundle"),
        ({"keys": [x509_jwk("ec-p521")]}, "unsupported_key_type"),
        ({"keys": [x509_jwk("rsa-1024")]}, "unsupported_key_type"),
        ({"keys": [x509_jwk("ed25519")]}, "unsupported_key_type"),
        ({"keys": [jwt_jwk("ec-p521")]}, "unsupported_key_type"),
        ({"keys": [jwt_jwk("ec-p256")] * 129}, "bundle_too_large"),
    ],
    ids=[
        "x5c number",
        "coordinate number",
        "crv list",
        "sequence past int64",
        "sequence huge",
        "not an object",
        "deeply nested string",
        "P-521 CA",
        "RSA-1024 CA",
        "Ed25519 CA",
        "P-521 JWT key",
        "too many keys",
    ],
)
def test_a_bad_foreign_bundle_is_400_with_a_code_and_nothing_is_stored(
    tenant_a, bundle, code
) -> None:
    response = _post(tenant_a, bundle)

    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    with tenant_a.schema():
        assert not FederationRelationship.objects.exists()


def test_a_bad_bundle_in_a_patch_keeps_the_last_good_one(tenant_a) -> None:
    good = {"keys": [x509_jwk("ec-p256")], "spiffe_sequence": 3}
    assert _post(tenant_a, good).status_code == 201

    response = tenant_a.client.patch(
        f"{PATH}/{PARTNER}",
        {"trust_domain_bundle": {"keys": [{"use": "x509-svid", "x5c": [7]}]}},
        format="json",
    )

    assert response.status_code == 400
    held = tenant_a.client.get(f"{PATH}/{PARTNER}").json()
    assert (held["bundle"], held["bundle_sequence"]) == (good, 3)


@pytest.mark.parametrize("kind", ["rsa-2048", "rsa-4096", "ec-p384"])
def test_an_agent_gets_a_federated_ca_of_every_key_type_spire_issues(
    agent_api,  # noqa: F811 - the fixture imported above
    tenant_a,
    kind,
) -> None:
    # given A federates with a peer whose CA has an RSA or P-384 key, and an entry of A's
    # agent federates with it
    bundle = {"keys": [x509_jwk(kind), jwt_jwk(kind, kid="peer-jwt")], "spiffe_sequence": 9}
    assert _post(tenant_a, bundle).status_code == 201
    identity, _, client = attested(agent_api, tenant_a)
    create_entry(tenant_a, "/fed", parent_id=identity.spiffe_id, federates_with=[PARTNER])

    # when the agent fetches its bundle (what its workloads' X.509 contexts are built from)
    try:
        answer = client.fetch_bundle()
    finally:
        client.close()

    # then the tenant's own bundle and the peer's CA and JWT key are all there
    assert answer.trust_domain == tenant_a.trust_domain
    federated = Bundle.parse(TrustDomain(PARTNER), answer.federated_bundles[PARTNER])
    assert federated.x509_authorities == (ca_certificate(kind),)
    assert [a.key_id for a in federated.jwt_authorities] == ["peer-jwt"]


def test_a_stored_bundle_that_became_unreadable_does_not_break_the_agents_bundle(
    agent_api,  # noqa: F811 - the fixture imported above
    tenant_a,
) -> None:
    # given a relationship whose stored bundle is not a bundle (stored before checks tightened)
    assert _post(tenant_a, {"keys": [x509_jwk("ec-p256")]}).status_code == 201
    with tenant_a.schema():
        FederationRelationship.objects.update(bundle_json={"keys": "broken"})
    identity, _, client = attested(agent_api, tenant_a)
    create_entry(tenant_a, "/fed", parent_id=identity.spiffe_id, federates_with=[PARTNER])

    # then the agent still gets its own trust domain's bundle; the broken one is left out
    try:
        answer = client.fetch_bundle()
    finally:
        client.close()
    assert answer.trust_domain == tenant_a.trust_domain
    assert PARTNER not in answer.federated_bundles


def test_a_foreign_bundle_set_by_one_tenant_never_reaches_another_tenants_agents(
    agent_api,  # noqa: F811 - the fixture imported above
    tenant_a,
    tenant_b,
) -> None:
    # given A holds an RSA-2048 peer bundle, and an entry of B's agent names the same peer
    assert _post(tenant_a, {"keys": [x509_jwk("rsa-2048")]}).status_code == 201
    identity, _, client = attested(agent_api, tenant_b)
    create_entry(tenant_b, "/fed", parent_id=identity.spiffe_id, federates_with=[PARTNER])

    # then B's agent gets B's own bundle and nothing of A's relationship
    try:
        answer = client.fetch_bundle()
    finally:
        client.close()
    assert answer.trust_domain == tenant_b.trust_domain
    assert dict(answer.federated_bundles) == {}
    assert tenant_b.client.get(f"{PATH}/{PARTNER}").status_code == 404
