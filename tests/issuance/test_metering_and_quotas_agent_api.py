"""Metering and quotas on the real agent API: every SVID minted is counted exactly once (also
across a killed roll-up), a new agent past `max_agents` is RESOURCE_EXHAUSTED, renewals past
the monthly SVID quota are issued and counted, and reactivation restores SVID issuance."""

from __future__ import annotations

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.x509svid import make_csr
from issuance.models import Agent
from tenants import operators
from tenants.metering import counters, rollup
from tenants.metering.models import DailyUsage
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import AgentApiClient, AgentIdentity
from tests.issuance.conftest import bundle_pem, create_entry, create_join_token

pytestmark = pytest.mark.django_db(transaction=True)


def _stored(handle, metric: str) -> int:  # type: ignore[no-untyped-def]
    return sum(
        DailyUsage.objects.filter(tenant=handle.tenant, metric=metric).values_list(
            "value", flat=True
        )
    )


def _change(handle, **changes) -> None:  # type: ignore[no-untyped-def]
    operators.change_tenant(handle.tenant.id, changes=changes, actor="operator:test")


def _mint(client, entries: list[dict]) -> int:  # type: ignore[no-untyped-def,type-arg]
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
    response = client.new_svids({e["id"]: csr for e in entries})
    assert all(r.svid_chain for r in response.results), response
    return len(response.results)


def _new_agent(agent_api, handle, token: str | None = None):  # type: ignore[no-untyped-def]
    token = token or create_join_token(handle)["token"]
    client = AgentApiClient(
        agent_api.port, server_name=handle.trust_domain, roots_pem=bundle_pem(handle)
    )
    try:
        return client.attest(handle.trust_domain, token, AgentIdentity.fresh())
    finally:
        client.close()


def test_svids_minted_are_counted_exactly_across_a_killed_roll_up(agent_api, tenant_a, tenant_b):
    # given an agent of A (its SVID: 1) with three entries, and an agent of B (1)
    identity, _, client_a = attested(agent_api, tenant_a)
    _, _, client_b = attested(agent_api, tenant_b)
    entries = [create_entry(tenant_a, f"/w{n}", parent_id=identity.spiffe_id) for n in range(3)]
    try:
        # when A mints 3 X.509-SVIDs and 2 JWT-SVIDs, and a roll-up claims them and dies
        _mint(client_a, entries)
        for _ in range(2):
            client_a.new_jwt_svid(entries[0]["id"], ["db"])
        killed = rollup.claim()
        assert killed is not None
        # and then A mints 3 more and renews its own SVID; a second roll-up stores its batch
        # and dies before forgetting it
        _mint(client_a, entries)
        client_a.renew(ec.generate_private_key(ec.SECP256R1()))
        second = rollup.claim()
        assert second is not None and rollup.store(second)

        # and the roll-up runs again, twice
        rollup.roll_up()
        rollup.roll_up()
    finally:
        client_a.close()
        client_b.close()

    # then every SVID is counted once: A 1 + 3 + 3 + 1 X.509 and 2 JWT, B its agent's 1
    assert _stored(tenant_a, counters.X509_SVIDS) == 8
    assert _stored(tenant_a, counters.JWT_SVIDS) == 2
    assert _stored(tenant_b, counters.X509_SVIDS) == 1
    assert _stored(tenant_b, counters.JWT_SVIDS) == 0
    usage = tenant_a.client.get("/api/v1/usage").json()["totals"]
    assert (usage["x509_svids_issued"], usage["jwt_svids_issued"]) == (8, 2)


def test_a_new_agent_past_max_agents_is_resource_exhausted(agent_api, tenant_a, tenant_b):
    # given A limited to one agent, which it has
    _change(tenant_a, quotas={"max_agents": 1})
    identity, _, client_a = attested(agent_api, tenant_a)
    entry = create_entry(tenant_a, "/w", parent_id=identity.spiffe_id)
    try:
        # when a second agent of A attests
        token = create_join_token(tenant_a)["token"]
        with pytest.raises(grpc.RpcError) as refused:
            _new_agent(agent_api, tenant_a, token)

        # then it is refused, naming the quota, and no agent row is written
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details().startswith("quota_exceeded")
        assert "max_agents" in refused.value.details()
        with tenant_a.schema():
            assert Agent.objects.count() == 1
        # and the agent A has keeps renewing and minting
        client_a.renew(ec.generate_private_key(ec.SECP256R1()))
        assert _mint(client_a, [entry]) == 1
        # and B, without a quota, attests as many as it likes
        for _ in range(2):
            _new_agent(agent_api, tenant_b)
        # and once the operator raises A's quota, the second agent attests with the same join
        # token (the refusal did not spend it)
        _change(tenant_a, quotas={"max_agents": 2})
        assert _new_agent(agent_api, tenant_a, token).spiffe_id.startswith(
            f"spiffe://{tenant_a.trust_domain}/"
        )
    finally:
        client_a.close()


def test_svids_past_the_monthly_quota_are_issued_to_existing_identities(agent_api, tenant_a):
    # given A allowed 2 SVIDs a month, and an agent (1 SVID) with an entry
    _change(tenant_a, quotas={"max_svids_per_month": 2})
    identity, _, client_a = attested(agent_api, tenant_a)
    entry = create_entry(tenant_a, "/w", parent_id=identity.spiffe_id)
    try:
        # when it mints 3 workload SVIDs and renews its own, past the quota
        minted = sum(_mint(client_a, [entry]) for _ in range(3))
        client_a.renew(ec.generate_private_key(ec.SECP256R1()))

        # then all are issued and counted (the overage is billed, not refused)
        assert minted == 3
        assert counters.svids_this_month(tenant_a.tenant.pk) == 5
        # but a new identity, a new agent, waits for the quota
        with pytest.raises(grpc.RpcError) as refused:
            _new_agent(agent_api, tenant_a)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_svids_per_month" in refused.value.details()
    finally:
        client_a.close()


def test_reactivation_restores_svid_issuance(agent_api, tenant_a):
    # given an agent of A with an entry, and A suspended
    identity, _, client_a = attested(agent_api, tenant_a)
    entry = create_entry(tenant_a, "/w", parent_id=identity.spiffe_id)
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
    try:
        _change(tenant_a, status="suspended")
        with pytest.raises(grpc.RpcError) as refused:
            client_a.new_svids({entry["id"]: csr})
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # when the operator reactivates it
        _change(tenant_a, status="active")

        # then the agent gets SVIDs again
        result = client_a.new_svids({entry["id"]: csr}).results[0]
        assert result.error_code == "" and result.svid_chain
    finally:
        client_a.close()
