"""Simulated agents holding WatchUpdates streams: asyncio + ssl + h2, no grpc.aio.

A client process of benchmarks/watch_streams.py holds thousands of agents' connections. A
grpc.aio channel a connection is heavy and, past ~3,000 channels a process, lost streams of
its own (CANCELLED with nothing wrong on the server), so this client speaks gRPC over HTTP/2
itself: one TLS connection an agent (presenting the attested agent's SVID, SNI naming its
trust domain), one h2 stream on it carrying the WatchUpdates request (a 5-byte gRPC message
prefix and the protobuf), and the server's UpdateNotice messages read as they come. Each
stream records the time it first saw each new entries revision, and how it ended (the
grpc-status of its trailers, a reset, or a closed connection) if it did.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
import struct
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

WATCH_PATH = "/hallmark.agent.v1.AgentAPI/WatchUpdates"
TRUST_DOMAIN_METADATA = "x-hallmark-trust-domain"
_PREFIX = struct.Struct(">?I")  # gRPC message prefix: compressed flag, length
# asyncio's TLS transport allocates a read buffer this large a connection (256 KiB by
# default): thousands of connections in one client process need it small.
TLS_READ_BUFFER_BYTES = 16 * 1024


def tls_context(roots_pem: bytes, chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """The agent's mTLS client context: trusts the tenant's roots, presents its SVID."""
    import os
    import tempfile

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=roots_pem.decode())
    context.check_hostname = False  # the server's SVID names spiffe://<td>/..., not a host
    context.set_alpn_protocols(["h2"])
    # load_cert_chain reads files only: a private temporary file, removed at once.
    with tempfile.NamedTemporaryFile("wb", delete=False) as handle:
        os.chmod(handle.name, 0o600)
        handle.write(chain_pem + key_pem)
    try:
        context.load_cert_chain(handle.name)
    finally:
        os.unlink(handle.name)
    return context


class WatchStream(asyncio.Protocol):
    """One simulated agent: a TLS connection carrying one WatchUpdates stream."""

    def __init__(self, trust_domain: str, decode: Any) -> None:
        self.trust_domain = trust_domain
        self._decode = decode  # bytes -> UpdateNotice
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._stream_id = 0
        self.first = asyncio.get_running_loop().create_future()  # the first notice's revision
        self.revision = -1
        self.changes: list[float] = []  # when each newer entries revision was first seen
        self.ended: str | None = None  # how the stream ended, if it did

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        self._stream_id = self._h2.get_next_available_stream_id()
        self._h2.send_headers(
            self._stream_id,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", WATCH_PATH),
                (":authority", self.trust_domain),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                (TRUST_DOMAIN_METADATA, self.trust_domain),
            ],
        )
        request = b""  # WatchUpdatesRequest has no fields: its encoding is empty
        self._h2.send_data(self._stream_id, _PREFIX.pack(False, len(request)) + request)
        self._h2.end_stream(self._stream_id)
        transport.write(self._h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._end(f"h2 protocol error: {exc}")
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self._buffer += event.data
                self._messages()
            elif isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                status = dict(event.headers).get(b"grpc-status")
                if status is not None:  # trailers (or a trailers-only answer): the end
                    message = dict(event.headers).get(b"grpc-message", b"").decode()
                    self._end(f"grpc-status {status.decode()} {message}".strip())
            elif isinstance(event, h2.events.StreamReset):
                self._end(f"reset (h2 error {event.error_code})")
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._end(f"goaway (h2 error {event.error_code})")
        if self._transport is not None and (outgoing := self._h2.data_to_send()):
            self._transport.write(outgoing)

    def eof_received(self) -> bool | None:
        self._end("connection closed by the server")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost ({exc})" if exc else "connection closed")
        self._transport = None

    # -- gRPC framing --------------------------------------------------------------------------
    def _messages(self) -> None:
        while len(self._buffer) >= _PREFIX.size:
            compressed, length = _PREFIX.unpack_from(self._buffer)
            if len(self._buffer) < _PREFIX.size + length:
                return
            body = bytes(self._buffer[_PREFIX.size : _PREFIX.size + length])
            del self._buffer[: _PREFIX.size + length]
            if compressed:
                self._end("compressed message (not negotiated)")
                return
            self._notice(self._decode(body).entries_revision)

    def _notice(self, revision: int) -> None:
        if not self.first.done():
            self.revision = revision
            self.first.set_result(revision)
        elif revision > self.revision:  # a keepalive carries the same revision
            self.revision = revision
            self.changes.append(time.time())

    def _end(self, how: str) -> None:
        if self.ended is None:
            self.ended = how
        if not self.first.done():
            self.first.set_exception(ConnectionError(how))
        if self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_stream(
    host: str, port: int, context: ssl.SSLContext, trust_domain: str, decode: Any
) -> WatchStream:
    """Connect, handshake, send the request; returns once the first notice was read."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(
        lambda: WatchStream(trust_domain, decode),
        host,
        port,
        ssl=context,
        server_hostname=trust_domain,
    )
    await stream.first
    return stream
