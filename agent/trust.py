"""Bootstrap trust in the control plane: a bundle file, a bundle URL, or (insecurely) nothing.

The insecure bootstrap cannot make grpcio skip certificate checks, so for the first
AttestAgent only the agent opens the TLS connection itself without verification (SNI = the
trust domain name) and hands grpcio a plaintext local Unix socket piped through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import urllib.error
import urllib.request

from cryptography import x509

from agent.servertls import pipe
from hallmark.bundle import Bundle, load_pem_certificates
from hallmark.errors import HallmarkError
from hallmark.relay import private_socket_path
from hallmark.spiffeid import TrustDomain

_log = logging.getLogger(__name__)
MAX_BUNDLE_BYTES = 4 * 1024 * 1024


class BootstrapError(HallmarkError):
    """The agent cannot establish trust in the control plane."""

    code = "trust_bootstrap_failed"


def parse_bundle(trust_domain: TrustDomain, data: bytes, source: str) -> Bundle:
    """A bundle from PEM certificates or a SPIFFE bundle (JWKS) document, auto-detected."""
    text = data.lstrip()
    try:
        if text.startswith(b"-----BEGIN"):
            bundle = Bundle(trust_domain, tuple(load_pem_certificates(data)))
        elif text.startswith(b"{"):
            bundle = Bundle.parse(trust_domain, data)
        else:
            raise BootstrapError(f"{source} is neither PEM certificates nor a SPIFFE bundle (JSON)")
    except HallmarkError as exc:
        if isinstance(exc, BootstrapError):
            raise
        raise BootstrapError(f"{source}: {exc.detail}") from None
    if not bundle.x509_authorities:
        raise BootstrapError(f"{source} holds no X.509 authorities for {trust_domain}")
    return bundle


def load_bundle_file(trust_domain: TrustDomain, path: str) -> Bundle:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BUNDLE_BYTES)
    except OSError as exc:
        raise BootstrapError(
            f"cannot read trust bundle {path}: {exc.strerror}; download the tenant bundle "
            "(GET /api/v1/bundle) to that file or use --trust-bundle-url"
        ) from None
    return parse_bundle(trust_domain, data, path)


def fetch_bundle_url(trust_domain: TrustDomain, url: str, timeout: float = 10.0) -> Bundle:
    """GET a bundle over HTTP(S); HTTPS is verified against the system's web PKI roots."""
    request = urllib.request.Request(  # noqa: S310 (scheme checked by AgentConfig)
        url, headers={"Accept": "application/json, application/x-pem-file"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data = response.read(MAX_BUNDLE_BYTES)
    except (urllib.error.URLError, OSError) as exc:
        raise BootstrapError(f"cannot fetch trust bundle from {url}: {exc}") from None
    return parse_bundle(trust_domain, data, url)


class InsecureTunnel:
    """A local plaintext Unix socket whose connections go on over unverified TLS.

    `server_certificate` keeps the last certificate the server presented, so the agent can
    check it against the bundle AttestAgent returns.
    """

    def __init__(self, host: str, port: int, trust_domain: TrustDomain, directory: str) -> None:
        self._host, self._port = host, port
        self._server_hostname = trust_domain.name
        self.path = private_socket_path(directory, "bootstrap.sock")
        self._server: asyncio.AbstractServer | None = None
        self.server_certificate: x509.Certificate | None = None

    def _context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the insecure bootstrap, by the operator's choice
        context.set_alpn_protocols(["h2"])
        return context

    async def __aenter__(self) -> InsecureTunnel:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._handle, path=self.path)
        os.chmod(self.path, 0o600)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote_writer: asyncio.StreamWriter | None = None
        try:
            remote_reader, remote_writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._context(),
                server_hostname=self._server_hostname,
                ssl_handshake_timeout=10,
            )
            ssl_object = remote_writer.get_extra_info("ssl_object")
            if ssl_object is not None and (der := ssl_object.getpeercert(binary_form=True)):
                self.server_certificate = x509.load_der_x509_certificate(der)
            await asyncio.gather(pipe(reader, remote_writer), pipe(remote_reader, writer))
        except (OSError, ssl.SSLError) as exc:
            _log.warning("insecure bootstrap: cannot reach %s:%d: %s", self._host, self._port, exc)
        finally:
            for w in (remote_writer, writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
