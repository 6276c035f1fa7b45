"""Each attestation makes or updates exactly its own agent's record, over the real agent API.

Written to kill mutants `make mutation` found surviving in issuance/services/agents.py: an
attestation that picked the tenant's first agent record instead of its own overwrote another
node's serial (locking that node out) and no test noticed, since no test attested two
agents of one tenant and then used the first.
"""

from __future__ import annotations

import pytest

from issuance.models import Agent
from issuance.services.agents import serial_hex
from tenants.models import AuditEvent
from tests.issuance.agent_steps import attested

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_second_agent_of_a_tenant_gets_a_record_of_its_own(agent_api, tenant_a) -> None:  # type: ignore[no-untyped-def]
    # given an attested agent A
    identity_a, token_a, client_a = attested(agent_api, tenant_a)

    # when a second node B attests with another token
    identity_b, token_b, client_b = attested(agent_api, tenant_a)

    # then each has its own record, with its own SPIFFE ID and the serial of its own SVID
    with tenant_a.schema():
        records = {a.spiffe_id: a for a in Agent.objects.all()}
    assert set(records) == {identity_a.spiffe_id, identity_b.spiffe_id}
    assert identity_a.spiffe_id.endswith(f"/spire/agent/join_token/{token_a['id']}")
    assert records[identity_a.spiffe_id].serial == serial_hex(identity_a.chain[0])
    assert records[identity_b.spiffe_id].serial == serial_hex(identity_b.chain[0])
    assert records[identity_a.spiffe_id].attestation_type == "join_token"
    # and A still works with its SVID: B's attestation did not take its place
    assert client_a.sync().entries is not None
    # and each attestation is audited as its own agent's
    for identity, token in ((identity_a, token_a), (identity_b, token_b)):
        event = AuditEvent.objects.get(action="agent.attest", target=identity.spiffe_id)
        assert event.outcome == "success"
        assert "127.0.0.1" in event.source  # the agent's address, as the API saw it
        assert event.actor == f"agent:{identity.spiffe_id}"
        assert event.detail["join_token"] == token["id"]
        assert event.detail["serial"] == serial_hex(identity.chain[0])
    client_a.close()
    client_b.close()


def test_a_join_token_with_a_spiffe_id_makes_it_the_agents_node_alias(agent_api, tenant_a) -> None:  # type: ignore[no-untyped-def]
    alias = f"spiffe://{tenant_a.trust_domain}/nodes/rack-1"
    identity, _, client = attested(agent_api, tenant_a, spiffe_id=alias)
    client.close()

    with tenant_a.schema():
        assert Agent.objects.get(spiffe_id=identity.spiffe_id).node_aliases == [alias]
