"""Agent API over real TLS: join-token attestation, SNI tenant selection, mTLS isolation."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from attestors.node import join_token
from hallmark.protos import agent_pb2
from hallmark.x509svid import make_csr, spiffe_id_of, verify_x509_svid
from issuance.models import Agent, JoinToken
from tenants.models import AuditEvent
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import (
    AgentApiClient,
    AgentIdentity,
    attest_call,
    wait_until_served,
)
from tests.issuance.conftest import bundle_pem, bundle_roots, create_join_token

pytestmark = pytest.mark.django_db(transaction=True)


def test_join_token_attestation_returns_an_agent_svid_that_verifies_against_the_bundle(
    agent_api, tenant_a
):
    # given a join token of tenant A
    token = create_join_token(tenant_a)
    identity = AgentIdentity.fresh()
    client = AgentApiClient(
        agent_api.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
    )

    # when an agent attests with it over TLS (no client certificate yet)
    response = client.attest(tenant_a.trust_domain, token["token"], identity)
    client.close()

    # then it gets an X.509-SVID for its key, with the join-token agent ID, valid in A's bundle
    expected = f"spiffe://{tenant_a.trust_domain}/spire/agent/join_token/{token['id']}"
    assert response.spiffe_id == expected
    leaf = identity.chain[0]
    assert str(verify_x509_svid(identity.chain, bundle_roots(tenant_a))) == expected
    assert leaf.public_key() == identity.key.public_key()
    assert response.bundle.trust_domain == tenant_a.trust_domain
    assert [x509.load_der_x509_certificate(d) for d in response.bundle.x509_authorities] == (
        bundle_roots(tenant_a)
    )
    with tenant_a.schema():
        agent = Agent.objects.get(spiffe_id=expected)
        assert agent.serial == format(leaf.serial_number, "x")
        assert JoinToken.objects.get(pk=token["id"]).used_at is not None


def test_server_presents_the_tenants_server_svid_for_the_sni_name(agent_api, tenant_a):
    # when a client connects with SNI = A's trust domain
    import socket
    import ssl

    assert wait_until_served(agent_api.port, tenant_a.trust_domain)
    context = ssl.create_default_context(cadata=bundle_pem(tenant_a).decode())
    with (
        socket.create_connection(("127.0.0.1", agent_api.port)) as raw,
        context.wrap_socket(raw, server_hostname=tenant_a.trust_domain) as tls,
    ):
        certificate = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))

    # then the server's certificate is A's spiffe://<td>/spire/server with DNS SAN <td>
    assert str(spiffe_id_of(certificate)) == f"spiffe://{tenant_a.trust_domain}/spire/server"
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [tenant_a.trust_domain]


def test_join_token_cannot_be_redeemed_twice(agent_api, tenant_a):
    # given a token that was redeemed once
    identity, token, client = attested(agent_api, tenant_a)
    client.close()
    second = AgentApiClient(
        agent_api.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
    )

    # when it is presented again
    with pytest.raises(grpc.RpcError) as failure:
        second.attest(tenant_a.trust_domain, token["token"], AgentIdentity.fresh())
    second.close()

    # then it is refused with the stable code and no second agent exists
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("join_token_used:")
    with tenant_a.schema():
        assert Agent.objects.count() == 1


def test_expired_join_token_is_refused(agent_api, tenant_a):
    # given a token whose expiry has passed
    token = create_join_token(tenant_a)
    with tenant_a.schema():
        JoinToken.objects.filter(pk=token["id"]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
    client = AgentApiClient(
        agent_api.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
    )

    # when an agent attests with it
    with pytest.raises(grpc.RpcError) as failure:
        client.attest(tenant_a.trust_domain, token["token"], AgentIdentity.fresh())
    client.close()

    # then it is refused, and the failure is audited
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("join_token_expired:")
    with tenant_a.schema():
        assert Agent.objects.count() == 0
        assert JoinToken.objects.get(pk=token["id"]).used_at is None
    assert AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action="agent.attest", outcome="failure"
    ).exists()


def test_malformed_attestation_is_invalid_argument_and_spends_no_token(agent_api, tenant_a):
    token = create_join_token(tenant_a)
    client = AgentApiClient(
        agent_api.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
    )
    with pytest.raises(grpc.RpcError) as bad_csr:
        attest_call(
            client.stub,
            agent_pb2.AttestAgentRequest(
                trust_domain=tenant_a.trust_domain,
                attestation_type="join_token",
                attestation_data=join_token.attestation_data(token["token"]),
                csr=b"not a csr",
            ),
            metadata=client.metadata,
        )
    with pytest.raises(grpc.RpcError) as bad_type:
        attest_call(
            client.stub,
            agent_pb2.AttestAgentRequest(
                trust_domain=tenant_a.trust_domain,
                attestation_type="no_such_attestor",
                attestation_data=b"{}",
                csr=make_csr(AgentIdentity.fresh().key),
            ),
            metadata=client.metadata,
        )
    client.close()
    assert bad_csr.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_csr.value.details().startswith("invalid_csr:")
    assert bad_type.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_type.value.details().startswith("unsupported_attestation_type:")
    with tenant_a.schema():
        assert JoinToken.objects.get(pk=token["id"]).used_at is None


def test_join_token_of_one_tenant_cannot_attest_to_another(agent_api, tenant_a, tenant_b):
    # given a join token of tenant A
    token = create_join_token(tenant_a)
    client = AgentApiClient(
        agent_api.port, server_name=tenant_b.trust_domain, roots_pem=bundle_pem(tenant_b)
    )

    # when it is presented to tenant B's endpoint
    with pytest.raises(grpc.RpcError) as failure:
        client.attest(tenant_b.trust_domain, token["token"], AgentIdentity.fresh())
    client.close()

    # then B does not know it, and A's token is still unused
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("join_token_invalid:")
    with tenant_b.schema():
        assert Agent.objects.count() == 0
    with tenant_a.schema():
        assert JoinToken.objects.get(pk=token["id"]).used_at is None


def test_agent_svid_of_one_tenant_is_refused_by_another(agent_api, tenant_a, tenant_b):
    # given an attested agent of tenant A
    identity, _, client_a = attested(agent_api, tenant_a)
    client_a.close()

    # when it talks to tenant B's endpoint (SNI B) presenting A's SVID
    client = AgentApiClient(
        agent_api.port,
        server_name=tenant_b.trust_domain,
        roots_pem=bundle_pem(tenant_b),
        identity=identity,
        wait_ready=False,
    )
    assert wait_until_served(agent_api.port, tenant_b.trust_domain)
    with pytest.raises(grpc.RpcError) as failure:
        client.sync()
    client.close()

    # then the call fails: B's TLS context trusts only B's authorities
    assert failure.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    # and at the TLS level the server rejects A's certificate (while A's own name accepts it)
    assert tls_client_certificate_accepted(agent_api, tenant_a, identity) is True
    assert tls_client_certificate_accepted(agent_api, tenant_b, identity) is False


def tls_client_certificate_accepted(agent_api, handle, identity) -> bool:
    """Handshake with SNI = handle's trust domain presenting `identity`'s SVID, then talk."""
    import socket
    import ssl
    import tempfile

    assert wait_until_served(agent_api.port, handle.trust_domain)
    context = ssl.create_default_context(cadata=bundle_pem(handle).decode())
    context.set_alpn_protocols(["h2"])
    with tempfile.NamedTemporaryFile() as pem:
        pem.write(identity.chain[0].public_bytes(serialization.Encoding.PEM))
        pem.write(
            identity.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pem.flush()
        context.load_cert_chain(pem.name)
    try:
        with (
            socket.create_connection(("127.0.0.1", agent_api.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=handle.trust_domain) as tls,
        ):
            # HTTP/2 preface: a live gRPC server answers with its SETTINGS frame
            tls.sendall(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            )
            return len(tls.recv(9)) > 0
    except (ssl.SSLError, ConnectionError):
        return False


def test_metadata_must_name_the_sni_trust_domain(agent_api, tenant_a, tenant_b):
    identity, _, client_a = attested(agent_api, tenant_a)
    client_a.close()
    client = AgentApiClient(
        agent_api.port,
        server_name=tenant_a.trust_domain,
        roots_pem=bundle_pem(tenant_a),
        identity=identity,
        metadata_td=tenant_b.trust_domain,
    )
    with pytest.raises(grpc.RpcError) as failure:
        client.sync()
    client.close()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith("trust_domain_mismatch:")


def test_unknown_sni_name_fails_the_handshake(agent_api, tenant_a):
    import socket
    import ssl

    context = ssl.create_default_context(cadata=bundle_pem(tenant_a).decode())
    with socket.create_connection(("127.0.0.1", agent_api.port)) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="nobody.example")


def test_calls_other_than_attest_need_a_client_certificate(agent_api, tenant_a):
    client = AgentApiClient(
        agent_api.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
    )
    with pytest.raises(grpc.RpcError) as failure:
        client.sync()
    client.close()
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert failure.value.details().startswith("no_client_certificate:")
