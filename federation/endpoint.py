"""The https_spiffe bundle endpoint: one TLS listener for every tenant, SNI picks the tenant.

The server presents the tenant's `spiffe://<td>/spire/server` X.509-SVID (the credentials
come from the agent API's per-tenant machinery, handed in by `config.cli`, so this app does
not import `issuance`) and answers `GET /` with the tenant's newest SPIFFE bundle, read from
the shared bundle cache on every request: a process keeps no state a peer replica lacks, so
any number of them share the port (SO_REUSEPORT). No client authentication is requested
(SPIFFE_Federation.md 5.2.2.2); unknown names fail the handshake with `unrecognized_name`
before any HTTP is read.

A tenant's server SVID is built when a handshake first names it (after a signup or a
restart): the listener peeks at the ClientHello and holds the handshake until that build
has ended, for half the handshake's time at most (hallmark.relay.wait_before_handshake), so
a peer's first fetch is served, not failed until its retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Protocol

from django.db import close_old_connections, connection

from hallmark import clienthello
from hallmark.relay import PEEK_AGAIN_SECONDS, bind_tcp_listeners, peek, wait_before_handshake
from tenants.events import ChangeEvent

log = logging.getLogger(__name__)
MAX_REQUEST_HEAD_BYTES = 8192
HANDSHAKE_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_REQUESTS_PER_CONNECTION = 100


class ServerCredentials(Protocol):
    """What the endpoint needs from the per-tenant TLS machinery."""

    def start(self) -> Future[None]: ...

    def sni_callback(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None: ...

    def build_awaited(self, server_name: str) -> Future[None] | None: ...

    def bundle_changed(self, event: ChangeEvent) -> None: ...

    def close(self) -> None: ...


def listening_context(credentials: ServerCredentials) -> ssl.SSLContext:
    """The listening context: no certificate of its own; the SNI callback picks a tenant's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    context.sni_callback = credentials.sni_callback
    return context


def bundle_document(trust_domain: str) -> bytes | None:
    """The newest bundle of the tenant with this trust domain, as JSON (None: no tenant)."""
    from tenants.scoping import get_tenant_by_trust_domain, tenant_schema
    from trustdomains.services import current_bundle

    close_old_connections()
    try:
        tenant = get_tenant_by_trust_domain(trust_domain)
        if tenant is None:
            return None
        with tenant_schema(tenant):
            return current_bundle().to_json()
    finally:
        # Worker threads come and go with asyncio's default executor: keep no connection.
        connection.close()


async def _server_name(conn: socket.socket) -> str | None:
    """The server name the connection's ClientHello asks for, peeked (the handshake reads
    it again): "" when there is none to wait for (no SNI, a ClientHello this cannot read,
    no TLS: the handshake answers those), None when the client closed first."""
    while True:
        data = await peek(conn)
        if not data:
            return None
        name = clienthello.server_name(data)
        if name != clienthello.NEED_MORE:
            markers = (clienthello.UNKNOWN, clienthello.NOT_TLS, clienthello.NOT_A_NAME)
            return "" if name in markers else name
        await asyncio.sleep(PEEK_AGAIN_SECONDS)  # split over TCP segments: the rest


def _response(status: str, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        # The bundle changes at rotation: a cache must revalidate (SPIRE sends none; a CDN
        # in front must not serve a stale bundle past the peer's refresh).
        "Cache-Control: no-cache",
        "X-Content-Type-Options: nosniff",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def _error(status: str, code: str, detail: str, *, head: bool = False) -> bytes:
    import json

    body = json.dumps({"code": code, "detail": detail}).encode()
    return _response(status, body, "application/json", head=head)


def _parse_request(head: bytes) -> tuple[bool, bool] | bytes:
    """(HEAD?, keep-alive?) of a request for the bundle, or the error answer to send."""
    if len(head) > MAX_REQUEST_HEAD_BYTES:
        return _error("431 Request Header Fields Too Large", "malformed_request", "")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _error("400 Bad Request", "malformed_request", "not an HTTP/1.1 request")
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    is_head = method == "HEAD"
    if "content-length" in headers or "transfer-encoding" in headers:
        return _error("400 Bad Request", "malformed_request", "no body expected")
    if method not in ("GET", "HEAD"):
        return _error("405 Method Not Allowed", "method_not_allowed", "GET / only")
    if target.split("?", 1)[0] != "/":
        return _error("404 Not Found", "not_found", "the bundle is at /", head=is_head)
    keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return is_head, keep_alive


class BundleEndpointServer:
    """One https_spiffe listener; `await start(host, port)` returns the bound port."""

    def __init__(
        self,
        credentials: ServerCredentials,
        read_bundle: Callable[[str], bytes | None] = bundle_document,
    ) -> None:
        self.credentials = credentials
        self.read_bundle = read_bundle
        self.port = 0
        self.served = 0
        self._context = listening_context(credentials)
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()  # accept loops and connections
        self._events: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        await asyncio.wrap_future(self.credentials.start())
        self._events = asyncio.create_task(self._follow_changes())
        self._listeners = bind_tcp_listeners(host, port, reuse_port=reuse_port)
        for listener in self._listeners:
            self._spawn(self._accept(listener))
        self.port = self._listeners[0].getsockname()[1]
        log.info("bundle endpoint pid %d listening on %s:%d", os.getpid(), host, self.port)
        return self.port

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError:
                await asyncio.sleep(0.1)  # out of file descriptors, say: let some close
                continue
            self._spawn(self._connection(conn))

    async def _connection(self, conn: socket.socket) -> None:
        """Hold the handshake until its tenant's credentials are built (if they are being
        built), then TLS, then the requests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANDSHAKE_TIMEOUT_SECONDS
        try:
            async with asyncio.timeout_at(deadline):
                name = await _server_name(conn)
            if name is None:
                conn.close()  # closed before its ClientHello
                return
            pending = self.credentials.build_awaited(name) if name else None
            if pending is not None:
                await wait_before_handshake(pending, deadline)
            reader = asyncio.StreamReader(limit=MAX_REQUEST_HEAD_BYTES)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._context,
                ssl_handshake_timeout=max(deadline - loop.time(), 0.001),
            )
        except (OSError, ssl.SSLError, TimeoutError):
            conn.close()
            return
        except asyncio.CancelledError:
            conn.close()
            raise
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await self._serve_connection(reader, writer)

    async def _follow_changes(self) -> None:
        """A rotation reaches the server SVID (and a new tenant its first one) at once."""
        from tenants.events import listen

        async for event in listen():
            try:
                self.credentials.bundle_changed(event)
            except Exception:
                log.exception("bundle endpoint: handling a change event failed")

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        trust_domain = getattr(getattr(ssl_object, "context", None), "trust_domain", None)
        try:
            if not trust_domain:
                return  # no SNI switch happened: no tenant (the handshake normally fails first)
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                keep_alive = await asyncio.wait_for(
                    self._serve_request(reader, writer, trust_domain), REQUEST_TIMEOUT_SECONDS
                )
                if not keep_alive:
                    break
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            writer.write(_error("431 Request Header Fields Too Large", "malformed_request", ""))
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
                await writer.wait_closed()

    async def _serve_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trust_domain: str
    ) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request = _parse_request(head)
        if isinstance(request, bytes):
            writer.write(request)
            return False
        is_head, keep_alive = request
        document = await asyncio.to_thread(self.read_bundle, trust_domain)
        if document is None:
            writer.write(_error("404 Not Found", "not_found", "unknown trust domain"))
            return False
        writer.write(_response("200 OK", document, "application/json", head=is_head))
        await writer.drain()
        self.served += 1
        return keep_alive

    async def stop(self) -> None:
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._events
        # the accept loops and connections end first: a listener closed under a waiting
        # accept would leave the loop watching a descriptor that no longer exists
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        await asyncio.to_thread(self.credentials.close)
        log.info("bundle endpoint pid %d served %d bundles", os.getpid(), self.served)


async def _serve(
    server: BundleEndpointServer,
    host: str,
    port: int,
    reuse_port: bool,
    on_listening: Callable[[], None] | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(host, port, reuse_port=reuse_port)
        if on_listening is not None:
            on_listening()
        await stop.wait()
    finally:
        await server.stop()


def serve(
    credentials: ServerCredentials,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve https_spiffe on host:port until SIGTERM or SIGINT (Django must be set up)."""
    server = BundleEndpointServer(credentials)
    asyncio.run(_serve(server, host, port, reuse_port, on_listening))
