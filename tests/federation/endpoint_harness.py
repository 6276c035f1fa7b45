"""A real https_spiffe bundle endpoint (federation.endpoint) in a thread, and a raw client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator

from cryptography import x509

from federation.endpoint import BundleEndpointServer
from issuance.agentapi.tls import TenantCredentials
from issuance.agentapi.tlsbuild import BUNDLE_ENDPOINT

TIMEOUT = 30.0


class EndpointThread:
    """BundleEndpointServer on 127.0.0.1:0 in its own event loop thread."""

    def __init__(self) -> None:
        self.server = BundleEndpointServer(TenantCredentials(profile=BUNDLE_ENDPOINT))
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop)
        self.port = future.result(timeout=TIMEOUT)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=TIMEOUT)


@contextlib.contextmanager
def running_endpoint() -> Iterator[EndpointThread]:
    thread = EndpointThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def client_context(roots_pem: bytes | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if roots_pem is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=roots_pem.decode())
    return context


def handshake(
    port: int, server_name: str, roots_pem: bytes | None = None, timeout: float = 20.0
) -> x509.Certificate:
    """The server certificate presented for SNI `server_name` (retried while it is built)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
                client_context(roots_pem).wrap_socket(
                    raw, server_hostname=server_name or None
                ) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                return x509.load_der_x509_certificate(der)
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLCertVerificationError) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def http_get(
    port: int, server_name: str, request: bytes, roots_pem: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes over TLS; the status, headers and body of the answer."""
    handshake(port, server_name, roots_pem)  # wait until the tenant's credentials exist
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        client_context(roots_pem).wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(request)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body
