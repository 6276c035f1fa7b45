"""Fetch a peer's SPIFFE bundle from its bundle endpoint (SPIFFE_Federation.md 5).

An outbound request made on a tenant's behalf, so it is fenced in:
- the host is resolved here and every address is checked before it is connected to; the
  connection goes to the checked address itself (no second resolution, so no DNS rebinding);
  loopback, private, link-local (cloud metadata), multicast and reserved addresses are refused
  unless their network is allowed by the operator;
- the response is capped in size (MAX_BUNDLE_BYTES) and the whole fetch in time;
- no credentials of any kind are sent (no cookies, no Authorization, no client certificate);
- redirects are followed (at most MAX_REDIRECTS, all treated as temporary) only to valid
  bundle endpoint URLs, with the same checks and the same endpoint authentication.

https_spiffe: SNI names the relationship's trust domain; the server's certificate must chain
to the bundle held for the endpoint's trust domain and be an X.509-SVID whose SPIFFE ID is the
configured endpoint SPIFFE ID. https_web: Web PKI (the operator's CA bundle or the system's),
host name checked as RFC 6125 says.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hallmark.bundle import MAX_BUNDLE_BYTES
from hallmark.errors import HallmarkError

MAX_REDIRECTS = 3
CONNECT_TIMEOUT_SECONDS = 5.0
TOTAL_TIMEOUT_SECONDS = 15.0
REDIRECTS = frozenset({301, 302, 303, 307, 308})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class BundleEndpointError(HallmarkError):
    """The bundle endpoint could not be fetched or its answer is not acceptable."""

    code = "bundle_endpoint_error"
    http_status = 502


@dataclass(frozen=True)
class Endpoint:
    """What a fetch needs to know: where, which profile, and how to authenticate it."""

    url: str
    profile: str  # "https_web" | "https_spiffe"
    trust_domain: str  # the relationship's: sent as SNI for https_spiffe
    endpoint_spiffe_id: str = ""
    roots_pem: bytes = b""  # https_spiffe: the bundle held for the endpoint's trust domain
    ca_bundle: str = ""  # https_web: a PEM file; "" = the system's trust store


def parse_networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]


def check_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a valid bundle endpoint URL (https, no userinfo), else raise."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise BundleEndpointError(
            "a bundle endpoint URL must use https", code="invalid_bundle_endpoint_url"
        )
    if "@" in parts.netloc:
        raise BundleEndpointError(
            "a bundle endpoint URL must not include userinfo", code="invalid_bundle_endpoint_url"
        )
    try:
        port = parts.port or 443
    except ValueError:
        raise BundleEndpointError(
            "the bundle endpoint URL has a bad port", code="invalid_bundle_endpoint_url"
        ) from None
    if not parts.hostname:
        raise BundleEndpointError(
            "the bundle endpoint URL has no host", code="invalid_bundle_endpoint_url"
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port, path


def forbidden(address: Address) -> bool:
    """Whether an address is off-limits unless allowed (not a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def resolve(host: str, port: int, allowed: Sequence[Network]) -> list[Address]:
    """The addresses of `host` a fetch may connect to; refuses if there are none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BundleEndpointError(f"cannot resolve {host}: {exc}") from None
    usable: list[Address] = []
    refused: list[str] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if forbidden(address) and not any(address in network for network in allowed):
            refused.append(str(address))
        elif address not in usable:
            usable.append(address)
    if not usable:
        raise BundleEndpointError(
            f"{host} resolves to {', '.join(refused)}: loopback, private, link-local and "
            "reserved addresses are refused (HALLMARK_FEDERATION_ALLOWED_NETWORKS)",
            code="bundle_endpoint_forbidden_address",
        )
    return usable


def _context(endpoint: Endpoint) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if endpoint.profile == "https_spiffe":
        if not endpoint.roots_pem:
            raise BundleEndpointError(
                "no bundle is held for the endpoint's trust domain to authenticate it with",
                code="bundle_endpoint_untrusted",
            )
        # The SPIFFE ID is checked after the handshake; the chain is checked by OpenSSL.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cadata=endpoint.roots_pem.decode())
        except ssl.SSLError as exc:
            raise BundleEndpointError(f"the held bundle is unusable: {exc}") from None
    elif endpoint.ca_bundle:
        context.load_verify_locations(cafile=endpoint.ca_bundle)
        context.check_hostname = True
    else:
        context.load_default_certs()
        context.check_hostname = True
    return context


def _check_server_svid(der: bytes | None, endpoint: Endpoint) -> None:
    """The presented certificate is an X.509-SVID (leaf) for the configured SPIFFE ID."""
    if der is None:
        raise BundleEndpointError("the endpoint presented no certificate")
    certificate = x509.load_der_x509_certificate(der)
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        if constraints.value.ca:
            raise BundleEndpointError("the endpoint's certificate is a CA, not an X.509-SVID")
    except x509.ExtensionNotFound:
        pass
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise BundleEndpointError("the endpoint's certificate is not an X.509-SVID")
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
            raise BundleEndpointError("the endpoint's X.509-SVID is not for server auth")
    except x509.ExtensionNotFound:
        pass
    if uris[0] != endpoint.endpoint_spiffe_id:
        raise BundleEndpointError(
            f"the endpoint presented {uris[0]}, not {endpoint.endpoint_spiffe_id}",
            code="bundle_endpoint_wrong_spiffe_id",
        )


class _PinnedConnection(http.client.HTTPSConnection):
    """HTTPS to one already-checked address, with the TLS name chosen by the profile."""

    def __init__(
        self, address: Address, port: int, server_name: str, context: ssl.SSLContext, t: float
    ) -> None:
        super().__init__(str(address), port, timeout=t, context=context)
        self._address = address
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection(
            (str(self._address), self.port), timeout=min(self.timeout or 5, 5)
        )
        raw.settimeout(self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self._server_name)


def _fetch_once(
    url: str, endpoint: Endpoint, allowed: Sequence[Network], deadline: float
) -> tuple[int, str, bytes]:
    host, port, path = check_url(url)
    addresses = resolve(host, port, allowed)
    context = _context(endpoint)
    server_name = endpoint.trust_domain if endpoint.profile == "https_spiffe" else host
    last: Exception | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        connection = _PinnedConnection(address, port, server_name, context, remaining)
        try:
            connection.connect()
            if endpoint.profile == "https_spiffe":
                assert isinstance(connection.sock, ssl.SSLSocket)
                _check_server_svid(connection.sock.getpeercert(binary_form=True), endpoint)
            netloc = host if port == 443 else f"{host}:{port}"
            connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", netloc)
            connection.putheader("Accept", "application/json")
            connection.putheader("User-Agent", "hallmark-federation")
            connection.putheader("Connection", "close")
            connection.endheaders()
            response = connection.getresponse()
            location = response.getheader("Location") or ""
            body = response.read(MAX_BUNDLE_BYTES + 1)
            if len(body) > MAX_BUNDLE_BYTES:
                raise BundleEndpointError(
                    f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes",
                    code="bundle_too_large",
                )
            return response.status, location, body
        except ssl.SSLCertVerificationError as exc:
            raise BundleEndpointError(
                f"the endpoint's certificate is not trusted: {exc.verify_message}",
                code="bundle_endpoint_untrusted",
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        finally:
            connection.close()
    raise BundleEndpointError(f"cannot fetch {url}: {last or 'timed out'}")


def fetch(endpoint: Endpoint, allowed: Sequence[Network]) -> bytes:
    """The body of the bundle endpoint's answer (a SPIFFE bundle still to be parsed)."""
    deadline = time.monotonic() + TOTAL_TIMEOUT_SECONDS
    url = endpoint.url
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _fetch_once(url, endpoint, allowed, deadline)
        if status in REDIRECTS and location:
            url = urljoin(url, location)  # checked like the configured URL on the next turn
            continue
        if status != 200:
            raise BundleEndpointError(f"the bundle endpoint answered HTTP {status}")
        return body
    raise BundleEndpointError(f"more than {MAX_REDIRECTS} redirects")
