"""Shared steps of the agent API tests: an attested agent and a client with a given SVID."""

from __future__ import annotations

from tests.issuance.agentapi_harness import AgentApiClient, AgentIdentity
from tests.issuance.conftest import bundle_pem, create_join_token


def attested(agent_api, handle, **token_body):
    """An agent of `handle` attested with a fresh join token; returns (identity, token, client)."""
    token = create_join_token(handle, **token_body)
    identity = AgentIdentity.fresh()
    anonymous = AgentApiClient(
        agent_api.port, server_name=handle.trust_domain, roots_pem=bundle_pem(handle)
    )
    try:
        anonymous.attest(handle.trust_domain, token["token"], identity)
    finally:
        anonymous.close()
    client = AgentApiClient(
        agent_api.port,
        server_name=handle.trust_domain,
        roots_pem=bundle_pem(handle),
        identity=identity,
    )
    return identity, token, client


def with_chain(agent_api, handle, key, chain):
    identity = AgentIdentity(key=key, chain=chain, spiffe_id="")
    return AgentApiClient(
        agent_api.port,
        server_name=handle.trust_domain,
        roots_pem=bundle_pem(handle),
        identity=identity,
    )
