"""authenticate_agent re-checks on every call that the agent's SVID chains to the bundle now.

An established mTLS connection is not proof enough: after the authority that signed the
agent's SVID is rotated out, tainted and revoked, the next call on the same connection is
refused; a certificate naming an attested agent but issued by any other CA (a foreign one,
another tenant's) is refused. CSRs must carry a valid self-signature on every agent API path
(issue 14, point 1).
"""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hallmark.errors import HallmarkError
from hallmark.protos import agent_pb2
from hallmark.x509svid import make_csr
from issuance import services
from issuance.errors import AgentNotAuthenticated
from issuance.models import Agent
from tenants.models import AuditEvent
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import TIMEOUT
from tests.issuance.conftest import create_entry
from tests.issuance.test_agent_api_taint import _base, _post, rotate_and_taint

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_revoked_authority_ends_the_agent_on_its_open_connection(agent_api, tenant_a, tenant_b):
    # given agents of A and B that attested and synced over connections kept open
    _, _, client_a = attested(agent_api, tenant_a)
    _, _, client_b = attested(agent_api, tenant_b)
    try:
        client_a.sync()
        client_b.sync()

        # when A rotates out, taints and revokes the authority that signed its agent's SVID
        old = rotate_and_taint(tenant_a, "x509")
        _post(tenant_a, f"{_base('x509')}/{old}/revoke")

        # then A's agent is refused on the same connection: its SVID no longer chains
        with pytest.raises(grpc.RpcError) as refused:
            client_a.sync()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details().startswith("invalid_agent_svid:")
        # and B's agent is untouched
        assert client_b.sync().agent_id.startswith(f"spiffe://{tenant_b.trust_domain}/")
    finally:
        client_a.close()
        client_b.close()


def _foreign_copy(leaf: x509.Certificate, trust_domain: str) -> x509.Certificate:
    """The same SPIFFE ID, serial and key as `leaf`, issued by a CA the tenant never had."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "foreign")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(ca_name)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def test_a_certificate_from_another_ca_is_not_an_agent(agent_api, tenant_a, tenant_b):
    # given an attested agent of A, and an attested agent of B
    identity_a, _, client_a = attested(agent_api, tenant_a)
    identity_b, _, client_b = attested(agent_api, tenant_b)
    client_a.close()
    client_b.close()
    foreign = _foreign_copy(identity_a.chain[0], tenant_a.trust_domain)

    with tenant_a.schema():
        # the real SVID authenticates
        assert services.authenticate_agent(identity_a.chain[0]).spiffe_id == identity_a.spiffe_id
        # when the same ID, serial and key come from a foreign CA, or B's SVID is shown to A
        for certificate in (foreign, identity_b.chain[0]):
            with pytest.raises(AgentNotAuthenticated) as refused:
                services.authenticate_agent(certificate)

            # then it is not an agent of A
            assert refused.value.code == "invalid_agent_svid"


def _bad_signature(csr_der: bytes) -> bytes:
    """A well-formed CSR whose self-signature does not verify (last signature byte flipped)."""
    bad = csr_der[:-1] + bytes([csr_der[-1] ^ 0x01])
    csr = x509.load_der_x509_csr(bad)
    assert not csr.is_signature_valid
    return bad


def test_a_csr_with_a_bad_signature_is_refused_on_every_agent_api_path(agent_api, tenant_a):
    # given an attested agent with an entry
    identity, _, client = attested(agent_api, tenant_a)
    entry = create_entry(tenant_a, "/pop", parent_id=identity.spiffe_id)
    with tenant_a.schema():
        serial_before = Agent.objects.get(spiffe_id=identity.spiffe_id).new_serial
    try:
        # when it asks for a workload SVID with a CSR over a key it does not hold
        batch = client.new_svids(
            {entry["id"]: _bad_signature(make_csr(ec.generate_private_key(ec.SECP256R1())))}
        )

        # then that request gets no SVID and a clear code
        [result] = batch.results
        assert not result.svid_chain
        assert result.error_code == "invalid_csr"

        # when it renews its own SVID with such a CSR
        with pytest.raises(grpc.RpcError) as renewal:
            client.stub.RenewAgent(
                agent_pb2.RenewAgentRequest(
                    csr=_bad_signature(make_csr(ec.generate_private_key(ec.SECP256R1())))
                ),
                metadata=client.metadata,
                timeout=TIMEOUT,
            )

        # then INVALID_ARGUMENT invalid_csr, and no new SVID was recorded for it
        assert renewal.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert renewal.value.details().startswith("invalid_csr:")
        with tenant_a.schema():
            assert Agent.objects.get(spiffe_id=identity.spiffe_id).new_serial == serial_before
        assert not AuditEvent.objects.filter(tenant=tenant_a.tenant, action="agent.renew").exists()
    finally:
        client.close()


def test_a_batch_check_answers_each_certificate_as_the_single_check_does(
    agent_api, tenant_a, tenant_b
):
    # given two attested agents of A, one of them banned, and an agent of B
    good, _, client_good = attested(agent_api, tenant_a)
    banned, _, client_banned = attested(agent_api, tenant_a)
    other, _, client_other = attested(agent_api, tenant_b)
    for client in (client_good, client_banned, client_other):
        client.close()
    [row] = [
        a
        for a in tenant_a.client.get("/api/v1/agents").json()
        if a["spiffe_id"] == banned.spiffe_id
    ]
    assert tenant_a.client.post(f"/api/v1/agents/{row['id']}/ban").status_code == 200
    certificates = [banned.chain[0], None, good.chain[0], other.chain[0], good.chain[0]]

    # when A checks them all in one batch
    with tenant_a.schema():
        results = services.authenticate_agents(certificates)
        # (and one by one, for comparison)
        single = []
        for certificate in certificates:
            try:
                single.append(services.authenticate_agent(certificate).spiffe_id)
            except HallmarkError as exc:
                single.append(exc.code)

    # then each answer is in its place, the same as the single check's
    answers = [r.code if isinstance(r, HallmarkError) else r.spiffe_id for r in results]
    assert answers == [
        "agent_banned",
        "no_client_certificate",
        good.spiffe_id,
        "invalid_agent_svid",
        good.spiffe_id,
    ]
    assert answers == single
