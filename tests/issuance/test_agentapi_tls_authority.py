"""The agent API's server SVID follows its authority: replaced once that is tainted or revoked.

The real agent API (TLS relay + grpc.aio, with its Redis change listener) serves two tenants;
authorities are rotated, tainted and revoked through the REST forced operations; what the
server presents is read from a real TLS handshake with the trust domain as SNI.
"""

from __future__ import annotations

import concurrent.futures
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from django.db import connections

from issuance.agentapi import tlsbuild
from tests.e2e.conftest import wait_for
from tests.issuance.agentapi_harness import wait_until_served
from tests.issuance.conftest import bundle_pem
from tests.issuance.test_agent_api_taint import _base, _post, rotate, taint
from trustdomains.models import X509Authority

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 30.0


def server_certificate(agent_api, handle) -> x509.Certificate:
    """The leaf the agent API presents for the tenant's trust domain, verified by its bundle."""
    assert wait_until_served(agent_api.port, handle.trust_domain)
    context = ssl.create_default_context(cadata=bundle_pem(handle).decode())
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", agent_api.port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=handle.trust_domain) as connection:
            der = connection.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def verified_certificate(agent_api, handle) -> x509.Certificate | None:
    """The presented leaf, or None while it does not verify against the current bundle."""
    try:
        return server_certificate(agent_api, handle)
    except ssl.SSLCertVerificationError:
        return None


def authority_certificate(handle, authority_id: str) -> x509.Certificate:
    with handle.schema():
        return X509Authority.objects.get(id=authority_id).certificate


def active_id(handle) -> str:
    with handle.schema():
        return str(X509Authority.objects.get(status="active").id)


def signed_by(leaf: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def in_thread(fn, *args):
    """Run like the server's credential threads do: a thread with its own connection."""

    def run():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(timeout=TIMEOUT)


def test_server_svid_is_replaced_when_its_authority_is_tainted(agent_api, tenant_a, tenant_b):
    # given the agent API presents SVIDs signed by each tenant's first authority
    first_a = active_id(tenant_a)
    before_a = server_certificate(agent_api, tenant_a)
    before_b = server_certificate(agent_api, tenant_b)
    assert signed_by(before_a, authority_certificate(tenant_a, first_a))

    # when tenant A rotates (its first authority becomes old: still published, not tainted)
    rotate(tenant_a, "x509")
    second_a = active_id(tenant_a)
    # then a refresh keeps the SVID: its authority is still trusted
    cached = agent_api.server.credentials._cache[tenant_a.trust_domain]
    assert in_thread(tlsbuild.refresh, cached).certificate_pem == cached.certificate_pem

    # when tenant A's old authority is tainted
    taint(tenant_a, "x509", first_a)

    # then the server soon presents an SVID from A's new authority, with a new key
    def replaced() -> x509.Certificate | None:
        presented = server_certificate(agent_api, tenant_a)
        return presented if presented.serial_number != before_a.serial_number else None

    renewed = wait_for(replaced, TIMEOUT, "a server SVID from the new authority")
    assert signed_by(renewed, authority_certificate(tenant_a, second_a))
    assert not signed_by(renewed, authority_certificate(tenant_a, first_a))
    assert renewed.public_key() != before_a.public_key()
    # and tenant B's SVID is untouched
    assert server_certificate(agent_api, tenant_b).serial_number == before_b.serial_number


def test_server_svid_signed_by_a_revoked_authority_is_replaced_on_refresh(
    agent_api, tenant_a, tenant_b
):
    # given the server's credentials for tenant A, signed by its first authority
    first_a = active_id(tenant_a)
    server_certificate(agent_api, tenant_a)
    server_certificate(agent_api, tenant_b)
    held = agent_api.server.credentials._cache[tenant_a.trust_domain]
    held_b = agent_api.server.credentials._cache[tenant_b.trust_domain]

    # when that authority is rotated out, tainted and revoked (it leaves the bundle)
    rotate(tenant_a, "x509")
    taint(tenant_a, "x509", first_a)
    _post(tenant_a, f"{_base('x509')}/{first_a}/revoke")

    # then refreshing what was held issues a new SVID from the active authority
    refreshed = in_thread(tlsbuild.refresh, held)
    leaf = x509.load_pem_x509_certificate(refreshed.certificate_pem)
    assert signed_by(leaf, authority_certificate(tenant_a, active_id(tenant_a)))
    assert refreshed.issuer_der != held.issuer_der
    # and the server presents such an SVID (one the bundle without the revoked CA verifies)
    presented = wait_for(
        lambda: verified_certificate(agent_api, tenant_a),
        TIMEOUT,
        "a server SVID that the new bundle verifies",
    )
    assert signed_by(presented, authority_certificate(tenant_a, active_id(tenant_a)))
    # while tenant B's refresh keeps its SVID
    assert in_thread(tlsbuild.refresh, held_b).certificate_pem == held_b.certificate_pem
