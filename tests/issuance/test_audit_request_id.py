"""Agent API calls carry a request id into the audit events they write, one per call."""

from __future__ import annotations

import grpc
import pytest

from tenants.models import AuditEvent
from tests.issuance.agent_steps import attested

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_agent_api_call_audits_under_a_request_id_of_its_own(  # type: ignore[no-untyped-def]
    agent_api, tenant_a
) -> None:
    # given an attested agent; when it makes a call that is refused (and audited)
    identity, _, client = attested(agent_api, tenant_a)
    with pytest.raises(grpc.RpcError):
        client.new_jwt_svid("no-such-entry", ["reports"])
    client.close()

    # then the attestation's and the refusal's events each carry a fresh id, not the same one
    events = AuditEvent.objects.filter(
        tenant=tenant_a.tenant, actor__contains=identity.spiffe_id
    ).order_by("sequence")
    ids = [e.request_id for e in events]
    assert len(ids) >= 2
    assert all(len(i) == 32 and i.isalnum() for i in ids), ids
    assert len(set(ids)) == len(ids)
