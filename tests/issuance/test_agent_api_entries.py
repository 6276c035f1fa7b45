"""Agent API after attestation: authorised entries, SVID minting, renewal, bans, eviction."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from hallmark.x509svid import verify_x509_svid
from issuance.models import Entry
from tenants.models import AuditEvent
from tests.crosstenant import assert_not_visible_to
from tests.issuance.agent_steps import attested, with_chain
from tests.issuance.conftest import bundle_roots, create_entry

pytestmark = pytest.mark.django_db(transaction=True)


def test_agent_receives_only_entries_parented_by_itself(agent_api, tenant_a, tenant_b):
    # given an agent of A, and entries of A and B under "its" agent path and elsewhere
    identity, token, client = attested(agent_api, tenant_a)
    agent_path = f"/spire/agent/join_token/{token['id']}"
    mine = create_entry(tenant_a, "/mine", parent_id=identity.spiffe_id)
    nested = create_entry(tenant_a, "/nested", parent_id=f"spiffe://{tenant_a.trust_domain}/mine")
    create_entry(
        tenant_a, "/other-agent", parent_id=f"spiffe://{tenant_a.trust_domain}/spire/agent/x"
    )
    create_entry(tenant_b, "/mine", parent_id=f"spiffe://{tenant_b.trust_domain}{agent_path}")
    expired = create_entry(tenant_a, "/expired", parent_id=identity.spiffe_id)
    with tenant_a.schema():
        Entry.objects.filter(pk=expired["id"]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )

    # when it syncs
    response = client.sync()
    bundle = client.fetch_bundle()
    client.close()

    # then it gets its own entries (and those below them), nothing of B or another agent
    assert response.agent_id == identity.spiffe_id
    assert sorted(e.id for e in response.entries) == sorted([mine["id"], nested["id"]])
    assert all(
        e.spiffe_id.startswith(f"spiffe://{tenant_a.trust_domain}/") for e in response.entries
    )
    assert bundle.trust_domain == tenant_a.trust_domain


def test_node_alias_from_the_join_token_makes_entries_under_it_visible(agent_api, tenant_a):
    # given a join token with a node alias, and an entry registered under the alias beforehand
    alias = f"spiffe://{tenant_a.trust_domain}/cluster/east"
    entry = create_entry(tenant_a, "/east-web", parent_id=alias)

    # when an agent attests with the token and syncs
    identity, _, client = attested(agent_api, tenant_a, spiffe_id=alias)
    response = client.sync()
    client.close()

    # then the alias is the agent's, and the entry under it is authorised
    assert list(response.node_aliases) == [alias]
    assert [e.id for e in response.entries] == [entry["id"]]
    assert tenant_a.client.get("/api/v1/agents").json()[0]["node_aliases"] == [alias]


def test_batch_signs_only_authorised_entries_with_the_entrys_identity(
    agent_api, tenant_a, tenant_b
):
    # given an agent of A, one entry it may mint, one of another agent and one of tenant B
    identity, _, client = attested(agent_api, tenant_a)
    mine = create_entry(
        tenant_a,
        "/mine",
        parent_id=identity.spiffe_id,
        x509_svid_ttl=600,
        dns_names=["mine.example"],
    )
    foreign = create_entry(
        tenant_a, "/foreign", parent_id=f"spiffe://{tenant_a.trust_domain}/spire/agent/other"
    )
    theirs = create_entry(
        tenant_b, "/theirs", parent_id=f"spiffe://{tenant_b.trust_domain}/spire/agent/x"
    )
    key = ec.generate_private_key(ec.SECP256R1())
    # a CSR that asks for another identity: only its key may be used
    greedy_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{tenant_a.trust_domain}/admin")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    audit_before = AuditEvent.objects.filter(action="svid.x509.new").count()

    # when it asks for SVIDs for all three
    response = client.new_svids(
        {mine["id"]: greedy_csr, foreign["id"]: greedy_csr, theirs["id"]: greedy_csr}
    )
    client.close()

    # then only its own entry is signed, as the entry says; the others get entry_not_authorized
    results = {r.entry_id: r for r in response.results}
    assert results[foreign["id"]].error_code == "entry_not_authorized"
    assert results[theirs["id"]].error_code == "entry_not_authorized"
    assert not results[foreign["id"]].svid_chain and not results[theirs["id"]].svid_chain
    chain = [x509.load_der_x509_certificate(d) for d in results[mine["id"]].svid_chain]
    assert results[mine["id"]].error_code == ""
    assert str(verify_x509_svid(chain, bundle_roots(tenant_a))) == mine["spiffe_id"]
    assert chain[0].public_key() == key.public_key()
    lifetime = chain[0].not_valid_after_utc - chain[0].not_valid_before_utc
    assert dt.timedelta(seconds=600) <= lifetime <= dt.timedelta(seconds=620)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mine.example"]
    assert AuditEvent.objects.filter(action="svid.x509.new", outcome="failure").count() == (
        audit_before + 1
    )
    # and nothing stored about the entries changed
    assert tenant_a.client.get(f"/api/v1/entries/{foreign['id']}").json() == foreign
    assert tenant_b.client.get(f"/api/v1/entries/{theirs['id']}").json() == theirs


def test_banned_agent_is_refused_everything(agent_api, tenant_a):
    # given an attested agent that the tenant bans
    identity, _, client = attested(agent_api, tenant_a)
    [agent] = tenant_a.client.get("/api/v1/agents").json()
    banned = tenant_a.client.post(f"/api/v1/agents/{agent['id']}/ban")
    assert banned.status_code == 200 and banned.json()["banned"] is True

    # when it syncs or renews
    with pytest.raises(grpc.RpcError) as sync_failure:
        client.sync()
    with pytest.raises(grpc.RpcError) as renew_failure:
        client.renew(ec.generate_private_key(ec.SECP256R1()))
    client.close()

    # then both are refused as banned
    for failure in (sync_failure, renew_failure):
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert failure.value.details().startswith("agent_banned:")
    assert AuditEvent.objects.filter(action="agent.ban", target=identity.spiffe_id).exists()


def test_evicted_agent_is_refused_until_it_attests_again(agent_api, tenant_a):
    identity, _, client = attested(agent_api, tenant_a)
    [agent] = tenant_a.client.get("/api/v1/agents").json()
    assert tenant_a.client.delete(f"/api/v1/agents/{agent['id']}").status_code == 204
    with pytest.raises(grpc.RpcError) as failure:
        client.sync()
    client.close()
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("agent_not_attested:")
    _, _, again = attested(agent_api, tenant_a)
    assert again.sync().agent_id
    again.close()


def test_renewed_svid_replaces_the_old_one_once_used(agent_api, tenant_a):
    # given an attested agent
    identity, _, client = attested(agent_api, tenant_a)
    old_chain = list(identity.chain)

    # when it renews with a new key
    new_key = ec.generate_private_key(ec.SECP256R1())
    response = client.renew(new_key)
    client.close()
    new_chain = [x509.load_der_x509_certificate(d) for d in response.svid_chain]

    # then the new SVID has the same ID and verifies; the old one still works until it is used
    assert str(verify_x509_svid(new_chain, bundle_roots(tenant_a))) == identity.spiffe_id
    assert new_chain[0].public_key() == new_key.public_key()
    assert with_chain(agent_api, tenant_a, identity.key, old_chain).sync().agent_id
    assert with_chain(agent_api, tenant_a, new_key, new_chain).sync().agent_id
    with pytest.raises(grpc.RpcError) as failure:
        with_chain(agent_api, tenant_a, identity.key, old_chain).sync()
    assert failure.value.details().startswith("agent_svid_superseded:")


def test_another_tenant_cannot_see_ban_or_evict_agents(agent_api, tenant_a, tenant_b):
    _, _, client = attested(agent_api, tenant_b)
    client.close()
    [agent] = tenant_b.client.get("/api/v1/agents").json()
    assert tenant_a.client.get("/api/v1/agents").json() == []
    assert_not_visible_to(tenant_a.client, "GET", f"/api/v1/agents/{agent['id']}")
    assert_not_visible_to(tenant_a.client, "POST", f"/api/v1/agents/{agent['id']}/ban")
    assert_not_visible_to(tenant_a.client, "DELETE", f"/api/v1/agents/{agent['id']}")
    assert tenant_b.client.get(f"/api/v1/agents/{agent['id']}").json()["banned"] is False


@pytest.mark.parametrize("marked_expired", [False, True], ids=["past-expiry", "marked-expired"])
def test_an_expired_entry_gets_no_svid_even_before_upkeep_removes_it(
    agent_api, tenant_a, marked_expired
):
    # given an agent with two entries, one of which is past its expires_at (upkeep has not
    # run yet), or has been marked expired by upkeep with no date set
    identity, _, client = attested(agent_api, tenant_a)
    live = create_entry(tenant_a, "/live", parent_id=identity.spiffe_id)
    later = create_entry(
        tenant_a,
        "/expires-later",
        parent_id=identity.spiffe_id,
        expires_at=(timezone.now() + dt.timedelta(hours=1)).isoformat(),
    )
    gone = create_entry(tenant_a, "/gone", parent_id=identity.spiffe_id)
    with tenant_a.schema():
        if marked_expired:
            Entry.objects.filter(id=gone["id"]).update(expired=True)
        else:
            Entry.objects.filter(id=gone["id"]).update(
                expires_at=timezone.now() - dt.timedelta(minutes=1)
            )

    # when the agent asks for SVIDs for both
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    response = client.new_svids({live["id"]: csr, later["id"]: csr, gone["id"]: csr})
    client.close()

    # then the live entries are signed (one with an expiry still ahead), the expired one not
    results = {r.entry_id: r for r in response.results}
    assert results[live["id"]].error_code == "" and results[live["id"]].svid_chain
    assert results[later["id"]].error_code == "" and results[later["id"]].svid_chain
    assert results[gone["id"]].error_code == "entry_not_authorized"
    assert not results[gone["id"]].svid_chain
