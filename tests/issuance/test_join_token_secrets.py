"""A join token redeems only with its own secret, whatever else the tenant has outstanding.

Over the real agent API (TLS, gRPC). Written to kill a mutant `make mutation` found surviving
in issuance/services/join_tokens.py: a redeem() that ignored the secret and took the tenant's
first unused token passed every test, because no test ever presented a wrong secret while a
good one was outstanding.
"""

from __future__ import annotations

import grpc
import pytest

from issuance.models import Agent, JoinToken
from tests.issuance.agentapi_harness import AgentApiClient, AgentIdentity
from tests.issuance.conftest import bundle_pem, create_join_token

pytestmark = pytest.mark.django_db(transaction=True)


def _attest(agent_api, handle, secret: str) -> grpc.RpcError | None:  # type: ignore[no-untyped-def]
    client = AgentApiClient(
        agent_api.port, server_name=handle.trust_domain, roots_pem=bundle_pem(handle)
    )
    try:
        client.attest(handle.trust_domain, secret, AgentIdentity.fresh())
    except grpc.RpcError as failure:
        return failure
    finally:
        client.close()
    return None


@pytest.mark.parametrize(
    "wrong",
    [
        lambda secret: secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB"),
        lambda secret: secret + "x",
        lambda secret: secret[:-1],
    ],
    ids=["altered", "longer", "shorter"],
)
def test_a_wrong_secret_is_refused_while_a_good_token_is_outstanding(  # type: ignore[no-untyped-def]
    agent_api, tenant_a, wrong
) -> None:
    # given an outstanding, unused join token of the tenant
    token = create_join_token(tenant_a)

    # when an agent presents a secret close to it, but not it
    failure = _attest(agent_api, tenant_a, wrong(token["token"]))

    # then it is refused as unknown, and the good token is neither spent nor linked
    assert failure is not None
    assert failure.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.details().startswith("join_token_invalid:"), failure.details()
    with tenant_a.schema():
        assert Agent.objects.count() == 0
        assert JoinToken.objects.get(pk=token["id"]).used_at is None

    # and the good secret still works afterwards
    assert _attest(agent_api, tenant_a, token["token"]) is None
