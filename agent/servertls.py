"""The agent's TLS to the agent API, authenticating the server as SPIRE agents do.

The server must present an X.509-SVID for `spiffe://<trust domain>/spire/server` that chains
to the trust domain's bundle. Chaining alone is not enough: under a shared upstream root, or
when a tenant registers an entry naming another trust domain as a DNS SAN, another SVID can
chain to the bundle and carry the trust domain as DNS name. grpcio's Python API cannot check
a URI SAN, so the agent makes the TLS connection itself (bundle as roots, its SVID as client
certificate, SNI = the trust domain), checks the server's SPIFFE ID, and only then pipes
grpcio's plaintext through it from a Unix socket in a private (0700) directory. Nothing the
agent sends (the join token included) leaves the host before the check passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile

from cryptography import x509

from hallmark.errors import HallmarkError
from hallmark.relay import private_socket_path
from hallmark.spiffeid import TrustDomain

_log = logging.getLogger(__name__)
_CHUNK = 256 * 1024
HANDSHAKE_TIMEOUT = 10.0


class ServerAuthenticationError(HallmarkError):
    """The agent API presented a certificate that is not the trust domain's server SVID."""

    code = "server_not_authenticated"


def server_spiffe_id(trust_domain: TrustDomain) -> str:
    return f"spiffe://{trust_domain.name}/spire/server"


def check_server_certificate(der: bytes | None, trust_domain: TrustDomain) -> None:
    """Raise unless `der` carries exactly one URI SAN, `spiffe://<td>/spire/server`."""
    expected = server_spiffe_id(trust_domain)
    if not der:
        raise ServerAuthenticationError("the agent API presented no certificate")
    try:
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        names = []
    if names != [expected]:
        shown = ", ".join(names) or "no SPIFFE ID"
        raise ServerAuthenticationError(
            f"server_not_authenticated: the agent API presented {shown}, not {expected}; "
            "it is not this trust domain's server (check --server and the trust bundle)"
        )


def client_context(
    roots_pem: bytes,
    chain_pem: bytes | None,
    key_pem: bytes | None,
    directory: str | None = None,
) -> ssl.SSLContext:
    """Verify the server against `roots_pem` (and its DNS SAN); present the SVID if given.

    `directory` (the agent's private data dir) holds the key for the instant ssl reads it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=roots_pem.decode("ascii"))
    context.set_alpn_protocols(["h2"])
    if chain_pem is not None and key_pem is not None:
        # ssl loads keys from files only: a private directory, removed at once.
        private = tempfile.mkdtemp(prefix=".tls-", dir=directory)
        try:
            chain_path = os.path.join(private, "chain.pem")
            key_path = os.path.join(private, "key.pem")
            for path, data in ((chain_path, chain_pem), (key_path, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            context.load_cert_chain(chain_path, key_path)
        finally:
            for name in ("chain.pem", "key.pem"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(private, name))
            os.rmdir(private)
    return context


class ServerTunnel:
    """A local plaintext Unix socket whose connections go on over authenticated TLS.

    `use` swaps the TLS context (new roots or client SVID); connections already open keep
    theirs. Start with `await start()`, stop with `await close()`.
    """

    def __init__(self, host: str, port: int, trust_domain: TrustDomain, directory: str) -> None:
        self._host, self._port = host, port
        self.trust_domain = trust_domain
        self.path = private_socket_path(directory, "agentapi.sock")
        self._context: ssl.SSLContext | None = None
        self._server: asyncio.AbstractServer | None = None
        self.refused = 0

    def use(self, context: ssl.SSLContext) -> None:
        self._context = context

    async def start(self) -> None:
        if self._server is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._handle, path=self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote_writer: asyncio.StreamWriter | None = None
        context = self._context
        try:
            if context is None:
                return
            remote_reader, remote_writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=context,
                server_hostname=self.trust_domain.name,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
            ssl_object = remote_writer.get_extra_info("ssl_object")
            der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
            check_server_certificate(der, self.trust_domain)
            await asyncio.gather(pipe(reader, remote_writer), pipe(remote_reader, writer))
        except ServerAuthenticationError as exc:
            self.refused += 1
            _log.error("%s:%d: %s", self._host, self._port, exc.detail)
        except (OSError, ssl.SSLError) as exc:
            _log.warning("cannot reach the agent API at %s:%d: %r", self._host, self._port, exc)
        finally:
            for w in (remote_writer, writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a tunnelled connection until it ends, then pass the end on."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
