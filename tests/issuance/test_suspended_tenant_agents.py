"""A suspended tenant's agents get no new SVIDs: every agent-API call and new attestations are
refused with PERMISSION_DENIED `tenant_suspended` until an operator reactivates the tenant."""

from __future__ import annotations

import grpc
import pytest

from tenants import operators
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import AgentApiClient, AgentIdentity
from tests.issuance.conftest import bundle_pem, create_join_token

pytestmark = pytest.mark.django_db(transaction=True)


def _suspend(handle, status: str) -> None:  # type: ignore[no-untyped-def]
    operators.change_tenant(handle.tenant.id, changes={"status": status}, actor="operator:test")


def test_a_suspended_tenant_agents_are_refused_until_reactivated(agent_api, tenant_a, tenant_b):
    # given attested agents of A and B, and a join token of A not used yet
    _, _, client_a = attested(agent_api, tenant_a)
    _, _, client_b = attested(agent_api, tenant_b)
    unused = create_join_token(tenant_a)["token"]
    roots = bundle_pem(tenant_a)
    newcomer = AgentApiClient(agent_api.port, server_name=tenant_a.trust_domain, roots_pem=roots)
    try:
        client_a.sync()

        # when an operator suspends A
        _suspend(tenant_a, "suspended")

        # then A's agent is refused on its open connection, and no new agent of A attests
        with pytest.raises(grpc.RpcError) as refused:
            client_a.sync()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details().startswith("tenant_suspended")
        with pytest.raises(grpc.RpcError) as not_attested:
            newcomer.attest(tenant_a.trust_domain, unused, AgentIdentity.fresh())
        assert not_attested.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "tenant_suspended" in not_attested.value.details()
        # and B's agent is untouched
        assert client_b.sync().agent_id.startswith(f"spiffe://{tenant_b.trust_domain}/")

        # when A is reactivated, its agent works again
        _suspend(tenant_a, "active")
        assert client_a.sync().agent_id.startswith(f"spiffe://{tenant_a.trust_domain}/")
    finally:
        client_a.close()
        client_b.close()
        newcomer.close()
