"""NewJWTSVID and federated bundles in FetchBundle, over the real TLS agent API."""

from __future__ import annotations

import grpc
import pytest

from hallmark.bundle import Bundle
from hallmark.jwtsvid import verify_jwt_svid
from hallmark.spiffeid import TrustDomain
from tenants.models import AuditEvent
from tests.issuance.agent_steps import attested
from tests.issuance.conftest import create_entry

pytestmark = pytest.mark.django_db(transaction=True)


def _bundle(handle) -> Bundle:
    response = handle.client.get("/api/v1/bundle")
    assert response.status_code == 200, response.content
    return Bundle.parse(TrustDomain(handle.trust_domain), response.content)


def test_jwt_svid_for_an_authorised_entry_verifies_against_the_tenant_bundle(agent_api, tenant_a):
    # given an agent and an entry of it with a 2-minute JWT-SVID TTL
    identity, _, client = attested(agent_api, tenant_a)
    entry = create_entry(tenant_a, "/api", parent_id=identity.spiffe_id, jwt_svid_ttl=120)

    # when it asks for a JWT-SVID for two audiences
    response = client.new_jwt_svid(entry["id"], ["spiffe://other.test/db", "billing"])
    client.close()

    # then the token verifies against the tenant's bundle, for the entry's SPIFFE ID
    bundle = _bundle(tenant_a)
    svid = verify_jwt_svid(
        response.token, audience="billing", bundles={bundle.trust_domain: bundle}
    )
    assert str(svid.spiffe_id) == entry["spiffe_id"]
    assert svid.audience == ("spiffe://other.test/db", "billing")
    assert svid.claims["iat"] == response.issued_at
    assert svid.claims["exp"] == response.expires_at == response.issued_at + 120


@pytest.mark.parametrize("whose", ["another agent's", "another tenant's", "unknown", "not a uuid"])
def test_jwt_svid_is_refused_for_an_entry_the_agent_is_not_authorised_for(
    agent_api, tenant_a, tenant_b, whose
):
    # given an agent of A, and an entry it does not own
    identity, token, client = attested(agent_api, tenant_a)
    agent_path = f"/spire/agent/join_token/{token['id']}"
    entry_id = {
        "another agent's": lambda: create_entry(
            tenant_a, "/x", parent_id=f"spiffe://{tenant_a.trust_domain}/spire/agent/other"
        )["id"],
        "another tenant's": lambda: create_entry(
            tenant_b, "/x", parent_id=f"spiffe://{tenant_b.trust_domain}{agent_path}"
        )["id"],
        "unknown": lambda: "00000000-0000-4000-8000-000000000000",
        "not a uuid": lambda: "../../etc",
    }[whose]()

    # when it asks for a JWT-SVID for it
    with pytest.raises(grpc.RpcError) as failure:
        client.new_jwt_svid(entry_id, ["aud"])
    client.close()

    # then it is refused, and the refusal is audited
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("entry_not_authorized:")
    assert AuditEvent.objects.filter(
        action="svid.jwt.new", outcome="failure", actor=f"agent:{identity.spiffe_id}"
    ).exists()


@pytest.mark.parametrize(
    "audience",
    [[], [""], ["ok", " "], [f"a{i}" for i in range(11)], ["x" * 256]],
    ids=["none", "empty", "blank", "eleven", "too-long"],
)
def test_jwt_svid_with_a_bad_audience_is_refused(agent_api, tenant_a, audience):
    identity, _, client = attested(agent_api, tenant_a)
    entry = create_entry(tenant_a, "/api", parent_id=identity.spiffe_id)
    with pytest.raises(grpc.RpcError) as failure:
        client.new_jwt_svid(entry["id"], audience)
    client.close()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith("invalid_audience:")


def test_jwt_svid_for_ten_audiences_of_255_characters_is_minted(agent_api, tenant_a):
    identity, _, client = attested(agent_api, tenant_a)
    entry = create_entry(tenant_a, "/api", parent_id=identity.spiffe_id)
    audience = [f"{i}".ljust(255, "x") for i in range(10)]
    response = client.new_jwt_svid(entry["id"], audience)
    client.close()
    bundle = _bundle(tenant_a)
    svid = verify_jwt_svid(
        response.token, audience=audience[9], bundles={bundle.trust_domain: bundle}
    )
    assert svid.audience == tuple(audience)


def test_fetch_bundle_carries_the_bundles_its_entries_federate_with(agent_api, tenant_a, tenant_b):
    # given A holds B's bundle through a federation relationship, and an entry of A's agent
    # federates with B (another entry, of another agent, federates with a third domain)
    b_bundle = tenant_b.client.get("/api/v1/bundle").json()
    created = tenant_a.client.post(
        "/api/v1/federation-relationships",
        {"trust_domain": tenant_b.trust_domain, "trust_domain_bundle": b_bundle},
        format="json",
    )
    assert created.status_code == 201, created.content
    identity, _, client = attested(agent_api, tenant_a)
    before = client.fetch_bundle()
    create_entry(
        tenant_a, "/fed", parent_id=identity.spiffe_id, federates_with=[tenant_b.trust_domain]
    )
    create_entry(
        tenant_a,
        "/elsewhere",
        parent_id=f"spiffe://{tenant_a.trust_domain}/spire/agent/other",
        federates_with=["third.test"],
    )

    # when the agent fetches its bundle
    after = client.fetch_bundle()
    client.close()

    # then B's bundle is there, keyed by name, and nothing for entries it does not hold
    assert dict(before.federated_bundles) == {}
    assert list(after.federated_bundles) == [tenant_b.trust_domain]
    federated = Bundle.parse(
        TrustDomain(tenant_b.trust_domain), after.federated_bundles[tenant_b.trust_domain]
    )
    assert federated.x509_authorities == _bundle(tenant_b).x509_authorities
    assert after.trust_domain == tenant_a.trust_domain


def test_jwt_svid_is_for_the_entry_asked_for_among_the_agents_entries(agent_api, tenant_a):
    # given an agent with several entries
    identity, _, client = attested(agent_api, tenant_a)
    entries = [create_entry(tenant_a, f"/svc-{n}", parent_id=identity.spiffe_id) for n in range(3)]

    # when it asks for a JWT-SVID for each in turn, last first
    bundle = _bundle(tenant_a)
    minted = []
    for entry in reversed(entries):
        token = client.new_jwt_svid(entry["id"], ["aud"]).token
        svid = verify_jwt_svid(token, audience="aud", bundles={bundle.trust_domain: bundle})
        minted.append(str(svid.spiffe_id))
    client.close()

    # then each carries the SPIFFE ID of the entry it was asked for, never another of them
    assert minted == [entry["spiffe_id"] for entry in reversed(entries)]
