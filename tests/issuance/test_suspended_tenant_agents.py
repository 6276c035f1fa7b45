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


def test_the_agent_check_without_a_tenant_row_reads_the_suspension_itself(
    agent_api, tenant_a, tenant_b
):  # type: ignore[no-untyped-def]
    from issuance import services
    from issuance.errors import AgentDenied

    # given attested agents of A and B
    identity_a, _, client_a = attested(agent_api, tenant_a)
    identity_b, _, client_b = attested(agent_api, tenant_b)
    client_a.close()
    client_b.close()
    # when an operator suspends A
    _suspend(tenant_a, "suspended")

    # then A's agent check, not handed the tenant's row, refuses it: alone and in a batch
    with tenant_a.schema():
        with pytest.raises(AgentDenied) as refused:
            services.authenticate_agent(identity_a.chain[0])
        assert refused.value.code == "tenant_suspended"
        batch = services.authenticate_agents([identity_a.chain[0], identity_a.chain[0]])
        assert [getattr(r, "code", None) for r in batch] == ["tenant_suspended"] * 2
    # and B's agent still passes
    with tenant_b.schema():
        assert services.authenticate_agent(identity_b.chain[0]).spiffe_id == identity_b.spiffe_id
