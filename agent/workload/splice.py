"""The Workload API's relay, with bytes passed on in the callback that receives them.

`hallmark.relay.Relay` pipes each connection through asyncio streams: every chunk wakes a
reader task, which then writes to the other side, one event-loop turn per hop and direction.
On a Unix socket that is most of what a Workload API call costs beyond the socket itself.
`WorkloadRelay` does the same job (identify the peer when the connection is accepted, connect
onward from a fresh address in the relay's private directory, register that address, forget
it when the connection ends) with protocols: data received on one side is written to the
other at once, half-closes are passed on, and back-pressure pauses the side that sends
(a transport whose write buffer fills pauses reading on the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any, TypeVar

from hallmark.relay import Relay, bind_unix_listener

T = TypeVar("T")
_log = logging.getLogger(__name__)
# Bytes held from a caller while the inner connection is being made, before reading pauses.
_PENDING_LIMIT = 256 * 1024


class WorkloadRelay(Relay[T]):
    """A Relay whose Unix listener splices connections in protocol callbacks."""

    async def serve_unix(self, path: str, *, mode: int = 0o777) -> None:
        sock = bind_unix_listener(path, mode)
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(lambda: _Front(self), sock=sock)
        self._servers.append(server)


class _Front(asyncio.Protocol):
    """The caller's connection; owns the relayed pair's lifecycle."""

    def __init__(self, relay: WorkloadRelay[Any]) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.inner: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.eof = False
        self.inner_eof = False
        self.finished = False
        self.address: str | None = None
        self.task: asyncio.Task[None] | None = None

    # -- the caller's side ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.task = asyncio.get_running_loop().create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.write(data)
            return
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes > _PENDING_LIMIT and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if self.inner is not None:
            _half_close(self.inner)
        self._close_if_both_ended()
        return True  # keep the transport open: the answer may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish()

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_reading()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_reading()

    # -- the inner side ------------------------------------------------------------------
    async def _connect(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        relay = self.relay
        try:
            info = await relay._identify(self.transport)  # type: ignore[arg-type]
            if info is None or self.finished:
                self.finish()
                return
            address = relay._next_address()
            inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address)  # a leftover of a crashed process: the directory is ours
                inner.bind(address)
                self.address = address
                relay.registry._register(address, info)
                inner.setblocking(False)
                await loop.sock_connect(inner, relay.inner_path)
                transport, _ = await loop.create_unix_connection(lambda: _Back(self), sock=inner)
            except BaseException:
                inner.close()
                raise
        except (ConnectionError, OSError):
            self.finish()
            return
        except asyncio.CancelledError:
            self.finish()
            return
        if self.finished:
            transport.close()
            return
        self.inner = transport
        for data in self.pending:
            transport.write(data)
        self.pending.clear()
        if self.pending_bytes > _PENDING_LIMIT:
            self.transport.resume_reading()
        self.pending_bytes = 0
        if self.eof:
            _half_close(transport)

    def inner_data(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def inner_eof_received(self) -> None:
        self.inner_eof = True
        if self.transport is not None:
            _half_close(self.transport)
        self._close_if_both_ended()

    def _close_if_both_ended(self) -> None:
        if self.eof and self.inner_eof:
            self.finish()

    def finish(self) -> None:
        """Close both sides and forget the relay address (once)."""
        if self.finished:
            return
        self.finished = True
        for transport in (self.inner, self.transport):
            if transport is not None:
                transport.close()
        if self.address is not None:
            self.relay.registry._forget(self.address)
            with contextlib.suppress(OSError):
                os.unlink(self.address)


class _Back(asyncio.Protocol):
    """The connection onward to the grpc.aio server."""

    def __init__(self, front: _Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.front.inner_data(data)

    def eof_received(self) -> bool:
        self.front.inner_eof_received()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.finish()

    def pause_writing(self) -> None:
        if self.front.transport is not None:
            self.front.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.front.transport is not None:
            self.front.transport.resume_reading()


def _half_close(transport: asyncio.Transport) -> None:
    try:
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
    except (OSError, RuntimeError):
        transport.close()
