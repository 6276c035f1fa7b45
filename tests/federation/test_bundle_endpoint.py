"""The https_spiffe bundle endpoint: SNI picks the tenant, its server SVID, its newest bundle."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator

import pytest
from cryptography import x509

from hallmark.bundle import Bundle
from hallmark.spiffeid import TrustDomain
from tests.federation.endpoint_harness import (
    EndpointThread,
    handshake,
    http_get,
    running_endpoint,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def endpoint() -> Iterator[EndpointThread]:
    with running_endpoint() as server:
        yield server


def _get(host: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def _uri(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.UniformResourceIdentifier)


def test_sni_picks_each_tenants_server_svid_and_bundle(endpoint, tenant_a, tenant_b) -> None:
    for handle in (tenant_a, tenant_b):
        # given the tenant's own published bundle (its roots)
        roots = handle.client.get("/api/v1/bundle?format=pem").content

        # when a fetcher names the tenant's trust domain in SNI
        certificate = handshake(endpoint.port, handle.trust_domain, roots)
        status, headers, body = http_get(endpoint.port, handle.trust_domain, _get("x"), roots)

        # then the server presents spiffe://<td>/spire/server, verified by that tenant's roots,
        # and answers its bundle as application/json with no caching allowed
        assert _uri(certificate) == [f"spiffe://{handle.trust_domain}/spire/server"]
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert headers["cache-control"] == "no-cache"
        expected = handle.client.get("/api/v1/bundle").json()
        assert json.loads(body) == expected
        Bundle.parse(TrustDomain(handle.trust_domain), body, strict=True)


def test_a_tenants_server_svid_fails_against_another_tenants_roots(
    endpoint, tenant_a, tenant_b
) -> None:
    # given tenant B's roots
    roots_b = tenant_b.client.get("/api/v1/bundle?format=pem").content
    handshake(endpoint.port, tenant_a.trust_domain)

    # when A's endpoint is authenticated against B's roots, then it fails
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(endpoint.port, tenant_a.trust_domain, roots_b)


def test_an_unknown_or_malformed_sni_is_refused_in_the_handshake(endpoint, tenant_a) -> None:
    # (asyncio cuts the handshake short rather than sending the alert: refused either way)
    for name in ("nobody-here.test", "NOT a name", ""):
        with pytest.raises(ssl.SSLError):
            handshake(endpoint.port, name, timeout=0.3)
    assert endpoint.server.served == 0


def test_the_served_bundle_is_always_the_newest_sequence(endpoint, tenant_a) -> None:
    # given the sequence served now
    _, _, before = http_get(endpoint.port, tenant_a.trust_domain, _get("x"))
    sequence = json.loads(before)["spiffe_sequence"]

    # when the tenant prepares a new X.509 authority (the bundle changes)
    answer = tenant_a.client.post("/api/v1/trust-domain/x509-authorities/prepare")
    assert answer.status_code in (200, 201), answer.content

    # then the next GET serves the new sequence, holding the new authority
    _, _, after = http_get(endpoint.port, tenant_a.trust_domain, _get("x"))
    assert json.loads(after)["spiffe_sequence"] > sequence
    assert len(json.loads(after)["keys"]) > len(json.loads(before)["keys"])


def test_head_wrong_path_method_and_malformed_requests(endpoint, tenant_a) -> None:
    td = tenant_a.trust_domain
    status, headers, body = http_get(
        endpoint.port, td, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    status, _, body = http_get(
        endpoint.port, td, b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 404 and json.loads(body)["code"] == "not_found"
    status, _, body = http_get(endpoint.port, td, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert status in (400, 405)
    status, _, body = http_get(endpoint.port, td, b"garbage\r\n\r\n")
    assert status == 400 and json.loads(body)["code"] == "malformed_request"
    status, _, _ = http_get(
        endpoint.port, td, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    )
    assert status == 431


def test_no_client_certificate_is_requested(endpoint, tenant_a) -> None:
    # The server MUST NOT require client authentication (SPIFFE_Federation.md 5.2.2.2):
    # a client with no certificate at all completes the handshake and gets the bundle.
    status, _, _ = http_get(endpoint.port, tenant_a.trust_domain, _get("x"))
    assert status == 200


def test_only_tls_1_2_or_later_is_negotiated(endpoint, tenant_a) -> None:
    # Mozilla intermediate compatibility: TLS 1.2 and 1.3 only
    import socket

    handshake(endpoint.port, tenant_a.trust_domain)
    for version, works in (
        (ssl.TLSVersion.TLSv1_2, True),
        (ssl.TLSVersion.TLSv1_3, True),
        (ssl.TLSVersion.TLSv1_1, False),
    ):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = version
        try:
            with (
                socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=tenant_a.trust_domain) as tls,
            ):
                negotiated = tls.version()
        except ssl.SSLError:
            negotiated = None
        assert (negotiated is not None) == works, (version, negotiated)
