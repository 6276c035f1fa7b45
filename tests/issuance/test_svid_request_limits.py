"""SVID requests at their limits: the batch size, and the audit of a refused JWT-SVID.

Over the real agent API and the real services. Written to kill mutants `make mutation` found
surviving in issuance/services/svids.py and issuance/services/jwt_svids.py.
"""

from __future__ import annotations

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.x509svid import make_csr
from issuance.errors import InvalidEntry
from issuance.models import Agent
from issuance.services.svids import MAX_BATCH, NOT_AUTHORIZED, SvidRequest, new_x509_svids
from tenants.models import AuditEvent
from tests.issuance.agent_steps import attested

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_of_the_maximum_size_is_answered_and_one_more_is_refused(  # type: ignore[no-untyped-def]
    agent_api, tenant_a
) -> None:
    identity, _, client = attested(agent_api, tenant_a)
    client.close()
    # entry ids longer than the 64 characters an audit row keeps of each
    unknown = [SvidRequest(entry_id=f"{n:080x}", csr=b"") for n in range(MAX_BATCH + 1)]

    with tenant_a.schema():
        agent = Agent.objects.get(spiffe_id=identity.spiffe_id)
        # exactly the limit: one answer per request (none authorised here)
        answers = new_x509_svids(
            tenant=tenant_a.tenant, agent=agent, requests=unknown[:-1], source="test-source"
        )
        assert [a.error_code for a in answers] == [NOT_AUTHORIZED] * MAX_BATCH
        assert all(a.error and not a.chain for a in answers)
        # one past it: the whole batch is refused, with its code
        with pytest.raises(InvalidEntry) as raised:
            new_x509_svids(tenant=tenant_a.tenant, agent=agent, requests=unknown)
    assert raised.value.code == "batch_too_large"
    # and the refusals were audited once, naming the first 50 entry ids
    event = AuditEvent.objects.get(action="svid.x509.new", outcome="failure")
    assert (event.actor, event.source) == (f"agent:{identity.spiffe_id}", "test-source")
    assert event.detail == {
        "code": NOT_AUTHORIZED,
        "entry_ids": [r.entry_id[:64] for r in unknown[:50]],
    }


def test_a_refused_jwt_svid_request_is_audited_with_its_source_and_entry(  # type: ignore[no-untyped-def]
    agent_api, tenant_a
) -> None:
    identity, _, client = attested(agent_api, tenant_a)
    long_entry_id = "e" * 100

    with pytest.raises(grpc.RpcError):
        client.new_jwt_svid(long_entry_id, ["reports"])
    client.close()

    event = AuditEvent.objects.get(action="svid.jwt.new", outcome="failure")
    assert event.actor == f"agent:{identity.spiffe_id}"
    assert "127.0.0.1" in event.source
    assert event.detail == {"code": NOT_AUTHORIZED, "entry_ids": [long_entry_id[:64]]}


def test_a_bad_csr_is_answered_for_its_request_and_the_rest_of_the_batch_is_signed(  # type: ignore[no-untyped-def]
    agent_api, tenant_a
) -> None:
    # given an entry authorised for an attested agent
    identity, _, client = attested(agent_api, tenant_a)
    client.close()
    created = tenant_a.client.post(
        "/api/v1/entries",
        {
            "spiffe_id": f"spiffe://{tenant_a.trust_domain}/web",
            "parent_id": identity.spiffe_id,
            "selectors": ["unix:uid:1000"],
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    entry_id = created.json()["id"]
    good_csr = make_csr(ec.generate_private_key(ec.SECP256R1()))

    # when one batch holds a bad CSR, then a good one, for that entry
    with tenant_a.schema():
        agent = Agent.objects.get(spiffe_id=identity.spiffe_id)
        answers = new_x509_svids(
            tenant=tenant_a.tenant,
            agent=agent,
            requests=[SvidRequest(entry_id, b"not a csr"), SvidRequest(entry_id, good_csr)],
        )

    # then the first is refused with its code and the second is still signed
    assert [a.entry_id for a in answers] == [entry_id, entry_id]
    assert answers[0].error_code == "invalid_csr" and answers[0].error
    assert answers[0].chain == ()
    assert answers[1].error_code == "" and answers[1].chain
    # and nothing was refused as unauthorised, so no refusal is audited
    assert not AuditEvent.objects.filter(action="svid.x509.new", outcome="failure").exists()
