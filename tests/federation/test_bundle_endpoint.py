"""The https_spiffe bundle endpoint: SNI picks the tenant, its server SVID, its newest bundle."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest
from cryptography import x509

from hallmark.bundle import Bundle
from hallmark.spiffeid import TrustDomain
from tests.conftest import make_tenant
from tests.e2e.conftest import wait_for
from tests.federation.endpoint_harness import (
    EndpointThread,
    client_context,
    handshake,
    http_get,
    running_endpoint,
)
from tests.issuance.agentapi_harness import server_svid_builds

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


# -- a tenant's first fetch: its server SVID is built then, and the handshake waits for it --


def _fetch_once(port: int, server_name: str, pieces: tuple[int, ...] = ()) -> tuple[int, bytes]:
    """One GET / with no retry: the status and body, or (0, b"") when the handshake failed.
    With `pieces`, the ClientHello is sent cut at those offsets, a pause after each."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname=server_name)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        for start, end in zip((0, *pieces), (*pieces, len(hello)), strict=True):
            sock.sendall(hello[start:end])
            time.sleep(0.05)

        def exchange(step: Callable[[], object]) -> object:
            while True:
                try:
                    return step()
                except ssl.SSLWantReadError:
                    if sent := outgoing.read():
                        sock.sendall(sent)
                    if not (chunk := sock.recv(65536)):
                        raise ConnectionResetError from None
                    incoming.write(chunk)

        try:
            exchange(tls.do_handshake)
            tls.write(_get("x"))
            sock.sendall(outgoing.read())
            answer = b""
            with contextlib.suppress(ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionError):
                while chunk := cast(bytes, exchange(lambda: tls.read(65536))):
                    answer += chunk
        except (ssl.SSLError, ConnectionError):
            return 0, b""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_a_tenant_signed_up_while_it_runs_gets_its_server_svid_at_its_first_fetch(endpoint):
    # given the endpoint running, counting the server SVIDs it builds
    credentials = endpoint.server.credentials
    with server_svid_builds() as built:
        # when a tenant signs up while it runs
        tenant = make_tenant("fresh")
        name = tenant.trust_domain

        # then its provisioning's event teaches it the name and builds nothing: a signup
        # costs the endpoint one query, not a key, a signature and a key-manager token
        wait_for(lambda: name in credentials._directory or None, 30, "the name learnt")
        time.sleep(0.5)  # a build would have started within microseconds of the learning
        assert built == []

        # and the first fetch naming it is served at once (no retry): its handshake waited
        # for the build it started
        status, body = _fetch_once(endpoint.port, name)
        assert status == 200
        assert json.loads(body) == tenant.client.get("/api/v1/bundle").json()
        assert built == [tenant.tenant.id]


def test_the_first_fetch_after_a_restart_is_served_not_failed(endpoint, tenant_a) -> None:
    # given tenant A served, then its credentials dropped (as after a restart)
    credentials = endpoint.server.credentials
    http_get(endpoint.port, tenant_a.trust_domain, _get("x"))
    credentials._cache.pop(tenant_a.trust_domain)

    # when a peer fetches A's bundle once, with its ClientHello whole and then in pieces
    # (a first record cut short is read again until it is whole), then both are served
    assert _fetch_once(endpoint.port, tenant_a.trust_domain)[0] == 200
    credentials._cache.pop(tenant_a.trust_domain)
    assert _fetch_once(endpoint.port, tenant_a.trust_domain, pieces=(3, 40))[0] == 200
    assert not credentials._building  # nothing left waiting


def test_a_fetcher_that_closes_before_its_client_hello_costs_nothing(endpoint, tenant_a):
    # when clients connect and close without a byte, or send bytes that are no TLS
    for data in (b"", b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            with contextlib.suppress(ConnectionError):
                assert not sock.recv(4096).startswith(b"HTTP")  # no HTTP without TLS

    # then nothing is left behind, and the endpoint still serves (a tenant it learnt)
    server = endpoint.server
    wait_for(lambda: len(server._tasks) == len(server._listeners) or None, 10, "connections end")
    known = server.credentials._directory  # type: ignore[attr-defined]
    wait_for(lambda: tenant_a.trust_domain in known or None, 30, "A learnt")
    assert _fetch_once(endpoint.port, tenant_a.trust_domain)[0] == 200
