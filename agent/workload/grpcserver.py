"""gRPC over HTTP/2 served straight on the Workload API's accepted Unix connections.

grpcio hides the accepted socket, so a servicer behind it cannot read the caller's kernel
credentials; the agent used to accept connections itself and relay every byte to a grpc.aio
server on a private socket, which cost a second hop on every call. Here the agent accepts
the connection, records the process that connected (SO_PEERCRED, its start time and
executable: attestors.workload.process) and speaks gRPC on that same connection with the h2
state machine, so every call on it is attested against that connected process and no bytes
are copied twice.

The gRPC subset served is what the Workload API needs (PROTOCOL-HTTP2.md of grpc): unary and
server-streaming methods, `grpc-timeout`, identity encoding only (a compressed message or
another `grpc-encoding` is refused), trailers-only answers for errors before the first
message, RST_STREAM ending a handler, flow control both ways, and GOAWAY then a drain when
the agent stops. Servicer methods get a `CallContext`, the part of grpc.aio.ServicerContext
they use.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from attestors.workload import process
from hallmark.relay import bind_unix_listener, peer_credentials

__all__ = [
    "AbortError",
    "CallContext",
    "GrpcUnixServer",
    "Limits",
    "MethodHandler",
    "connection_budget",
]

_log = logging.getLogger(__name__)
_PREFIX = struct.Struct(">BI")
_PREFIX_SIZE = _PREFIX.size
# Metadata the gRPC transport consumes itself; not shown to servicers.
_TRANSPORT_HEADERS = frozenset(
    {b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"}
)
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
_REFUSAL_LOG_INTERVAL = 10.0  # seconds between two log lines about refused connections


@dataclass(frozen=True)
class Limits:
    """What one Workload API connection may hold.

    gRPC's defaults where it has one: 4 MiB for a request message (grpc's receive limit), 16
    KiB of request headers (its hard metadata limit). Streams per connection are bounded by
    SETTINGS_MAX_CONCURRENT_STREAMS; request bytes buffered by one connection are bounded by
    withholding WINDOW_UPDATE, so a client that sends faster than calls start is stopped by
    flow control; an answer the client does not read stops its handler (the window, and the
    socket's write buffer), and a connection whose writes back up stops being read.
    """

    max_concurrent_streams: int = 128
    max_request_message: int = 4 * 1024 * 1024
    max_buffered_request_bytes: int = 8 * 1024 * 1024
    max_header_list_size: int = 16 * 1024
    # Connections open at once: from one uid (a local user cannot take the agent's
    # descriptors from every other workload), and in all. A connection past either is
    # closed as it is accepted; a gRPC client retries with back-off.
    max_connections_per_uid: int = 256
    max_connections: int = 4096


def connection_budget(cap: int = Limits.max_connections, reserve: int = 256) -> int:
    """How many Workload API connections this process can hold: its descriptor limit (the
    soft one raised toward the hard one first) less `reserve` for everything else, at most
    `cap`. Past the descriptor limit accept() would fail for every caller, not one."""
    import resource

    # Linux caps RLIMIT_NOFILE at fs.nr_open: neither limit is ever RLIM_INFINITY.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, cap + reserve)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return max(1, min(cap, soft - reserve))


class AbortError(Exception):
    """Raised by CallContext.abort: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class MethodHandler:
    """One gRPC method: unary-unary or unary-stream, with its (de)serializers."""

    streaming: bool
    handler: Callable[[Any, CallContext], Any]
    request_deserializer: Callable[[bytes], Any]
    response_serializer: Callable[[Any], bytes]


def method_handlers(
    add_to_server: Callable[[Any, Any], None], servicer: Any
) -> dict[str, MethodHandler]:
    """The methods a generated `add_XServicer_to_server` registers, keyed by path."""
    registered: dict[str, MethodHandler] = {}

    class _Collect:
        def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
            pass

        def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
            for name, handler in handlers.items():
                if handler.request_streaming:
                    raise ValueError(f"{service}/{name}: client streaming is not served")
                streaming = bool(handler.response_streaming)
                registered[f"/{service}/{name}"] = MethodHandler(
                    streaming=streaming,
                    handler=handler.unary_stream if streaming else handler.unary_unary,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )

    add_to_server(servicer, _Collect())
    return registered


class CallContext:
    """The part of grpc.aio.ServicerContext the Workload API's servicer uses."""

    def __init__(
        self,
        caller: process.ConnectedProcess,
        metadata: tuple[tuple[str, str | bytes], ...],
        deadline: float | None,
    ) -> None:
        self.caller = caller
        self._metadata = metadata
        self._deadline = deadline
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._cancelled = False
        self._done = False
        self._callbacks: list[Callable[[CallContext], None]] = []

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return f"unix:pid={self.caller.pid}"

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort with OK")
        raise AbortError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(self._deadline - asyncio.get_running_loop().time(), 0.0)

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[CallContext], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def _finish(self, cancelled: bool) -> None:
        if self._done:
            return
        self._done = True
        self._cancelled = cancelled
        for callback in self._callbacks:
            try:
                callback(self)
            except Exception:  # a callback's failure is its own; the call is over
                _log.exception("done callback failed")
        self._callbacks.clear()


def _grpc_message(details: str) -> bytes:
    """Percent-encode grpc-message as PROTOCOL-HTTP2.md asks (outside 0x20-0x7E, and %)."""
    raw = details.encode("utf-8")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def _status_headers(code: grpc.StatusCode, details: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        headers.append((b"grpc-message", _grpc_message(details)))
    return headers


def _is_grpc(content_type: bytes) -> bool:
    return content_type == b"application/grpc" or content_type.startswith(
        (b"application/grpc+", b"application/grpc;")
    )


def _parse_timeout(value: bytes) -> float | None:
    if len(value) < 2 or len(value) > 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1:])
    return None if unit is None else int(value[:-1]) * unit


class _Stream:
    """One call: its request bytes, its handler task, what has been sent."""

    __slots__ = (
        "buffer",
        "context",
        "headers_sent",
        "held",
        "id",
        "path",
        "request_ended",
        "task",
        "window",
    )

    def __init__(self, stream_id: int, path: bytes) -> None:
        self.id = stream_id
        self.path = path
        self.context: CallContext | None = None
        self.buffer = bytearray()
        self.held = 0  # flow-controlled bytes of the request (padding included)
        self.request_ended = False
        self.headers_sent = False
        self.task: asyncio.Task[None] | None = None
        self.window: asyncio.Event | None = None


class _Connection(asyncio.Protocol):
    """One accepted workload connection and its calls."""

    def __init__(self, server: GrpcUnixServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.caller: process.ConnectedProcess | None = None
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.streams: dict[int, _Stream] = {}
        self.buffered = 0  # request bytes held, not yet handed to a handler
        self.unacknowledged: list[tuple[int, int]] = []  # (stream, bytes) withheld
        self.closed = False
        self.draining = False
        self.write_paused = False
        self.writable: asyncio.Event | None = None
        self.idle: asyncio.Event | None = None

    # -- the socket ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        try:
            # Recorded now, while the connecting process is the one that called connect()
            # (issue 7, finding 3): every call on the connection is attested against it.
            credentials = peer_credentials(sock)
            self.caller = process.connected_process(
                credentials.pid, credentials.uid, credentials.gid
            )
        except OSError:
            transport.close()
            self.closed = True
            return
        if not self.server._admit(self):
            transport.close()
            self.closed = True
            return
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_list_size,
            },
        )
        self.h2.decoder.max_header_list_size = self.limits.max_header_list_size
        self.h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            for event in self.h2.receive_data(data):
                self._event(event)
        except h2.exceptions.ProtocolError as exc:
            # Not HTTP/2, or HTTP/2 broken beyond one stream: GOAWAY (h2 queued it), close.
            _log.debug("workload connection closed: %s", exc)
            self._flush()
            self._close()
            return
        self._flush()

    def eof_received(self) -> bool:
        return False  # the client sends nothing more: close (its calls are cancelled)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._release(self)
        for stream in list(self.streams.values()):
            self._cancel(stream)
        for event in (self.writable, self.idle):
            if event is not None:
                event.set()

    def pause_writing(self) -> None:
        # The client does not read what it is sent: stop reading what it sends (PINGs and
        # SETTINGS each need an answer) until it does.
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.writable is not None:
            self.writable.set()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- HTTP/2 events ------------------------------------------------------------------
    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, event.headers or [])
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.task is None and not stream.request_ended:
                stream.request_ended = True
                self._start(stream)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                self._release(stream)
                self._cancel(stream)
                self._maybe_idle()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                if stream.window is not None:
                    stream.window.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()

    def _request(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        request = _RequestHeaders(headers)
        method, path, content_type = request.method, request.path, request.content_type
        encoding, timeout, metadata = request.encoding, request.timeout, request.metadata
        if self.draining:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if method != b"POST":
            self.h2.send_headers(stream_id, [(b":status", b"405")], end_stream=True)
            return
        if content_type is None or not _is_grpc(content_type):
            self.h2.send_headers(stream_id, [(b":status", b"415")], end_stream=True)
            return
        stream = _Stream(stream_id, path or b"")
        self.streams[stream_id] = stream
        if encoding not in (None, b"identity"):
            self._trailers_only(
                stream,
                grpc.StatusCode.UNIMPLEMENTED,
                f"grpc-encoding {encoding!r} is not supported; send identity",
                [(b"grpc-accept-encoding", b"identity")],
            )
            return
        deadline = None
        if timeout is not None:
            seconds = _parse_timeout(timeout)
            if seconds is None:
                self._trailers_only(stream, grpc.StatusCode.INTERNAL, "malformed grpc-timeout")
                return
            deadline = asyncio.get_running_loop().time() + seconds
        assert self.caller is not None
        stream.context = CallContext(self.caller, tuple(metadata), deadline)

    def _data(self, event: h2.events.DataReceived) -> None:
        size = event.flow_controlled_length or 0
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.task is not None:
            # A call already answered (refused, or started): its bytes are dropped.
            self._acknowledge(size, event.stream_id)
            return
        stream.buffer.extend(event.data or b"")
        if len(stream.buffer) > self.limits.max_request_message + _PREFIX_SIZE:
            self._acknowledge(size, event.stream_id)
            self._trailers_only(
                stream,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request larger than {self.limits.max_request_message} bytes",
            )
            return
        stream.held += size
        self.buffered += size
        if self.buffered <= self.limits.max_buffered_request_bytes:
            self._acknowledge(size, event.stream_id)
        else:
            self.unacknowledged.append((event.stream_id, size))

    def _release(self, stream: _Stream) -> None:
        """The stream's request bytes are consumed: let the client send more."""
        self.buffered -= stream.held
        stream.held = 0
        stream.buffer = bytearray()
        while self.unacknowledged and self.buffered <= self.limits.max_buffered_request_bytes:
            stream_id, size = self.unacknowledged.pop(0)
            self._acknowledge(size, stream_id)

    def _acknowledge(self, size: int, stream_id: int) -> None:
        if size:
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self.h2.acknowledge_received_data(size, stream_id)

    def _start(self, stream: _Stream) -> None:
        handler = self.server.methods.get(stream.path.decode("utf-8", "replace"))
        body = bytes(stream.buffer)
        self._release(stream)
        if handler is None:
            self._trailers_only(
                stream,
                grpc.StatusCode.UNIMPLEMENTED,
                f"Method not found: {stream.path.decode('utf-8', 'replace')}",
            )
            return
        if len(body) < _PREFIX_SIZE:
            self._trailers_only(stream, grpc.StatusCode.INTERNAL, "expected one request message")
            return
        flag, length = _PREFIX.unpack_from(body)
        if flag != 0:
            self._trailers_only(
                stream,
                grpc.StatusCode.INTERNAL,
                "compressed message received without a grpc-encoding this server supports",
            )
            return
        if len(body) != _PREFIX_SIZE + length:
            self._trailers_only(stream, grpc.StatusCode.INTERNAL, "expected one request message")
            return
        try:
            request = handler.request_deserializer(body[_PREFIX_SIZE:])
        except Exception:
            self._trailers_only(stream, grpc.StatusCode.INTERNAL, "request could not be parsed")
            return
        context = stream.context
        assert context is not None
        stream.task = asyncio.get_running_loop().create_task(
            self._call(stream, handler, request, context)
        )

    def _cancel(self, stream: _Stream) -> None:
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        if stream.window is not None:
            stream.window.set()

    # -- answering ----------------------------------------------------------------------
    async def _call(
        self, stream: _Stream, handler: MethodHandler, request: Any, context: CallContext
    ) -> None:
        code, details = grpc.StatusCode.OK, ""
        cancelled = False
        try:
            if context._deadline is None:
                # No deadline (SPIFFE clients set none on most calls): no timer to arm.
                answered = await self._respond(stream, handler, request, context)
            else:
                async with asyncio.timeout_at(context._deadline):
                    answered = await self._respond(stream, handler, request, context)
            if answered:
                return
            code = context.code() or grpc.StatusCode.OK
            details = context.details()
        except AbortError as exc:
            code, details = exc.code, exc.details
        except TimeoutError:
            code, details = grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"
        except asyncio.CancelledError:
            cancelled = True
            if stream.id not in self.streams or self.closed:
                raise  # the client reset the stream or went away: nobody to answer
            # Cancelled by the server (a drain that ran out of time): the client is told.
            code, details = grpc.StatusCode.UNAVAILABLE, "the agent is shutting down"
        except _StreamGone:
            cancelled = True
            return
        except Exception as exc:
            _log.exception("Workload API call %s failed", stream.path.decode())
            code, details = grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}"
        finally:
            context._finish(cancelled)
        self._end(stream, code, details)

    async def _respond(
        self, stream: _Stream, handler: MethodHandler, request: Any, context: CallContext
    ) -> bool:
        """Run the handler and send its messages; True when the status went too."""
        if not handler.streaming:
            payload = handler.response_serializer(await handler.handler(request, context))
            if self._send_unary(stream, payload, context):
                return True
            await self._send_message(stream, payload)
            return False
        responses = handler.handler(request, context)
        if inspect.isawaitable(responses):
            # A streaming method written as a coroutine (grpc.aio allows it): no message.
            await responses
            return False
        async for response in responses:
            await self._send_message(stream, handler.response_serializer(response))
        return False

    def _send_unary(self, stream: _Stream, payload: bytes, context: CallContext) -> bool:
        """Headers, the one message and trailers in one write; False when the window is short
        (the message then goes as a stream's would)."""
        message = _PREFIX.pack(0, len(payload)) + payload
        self._check_open(stream)
        if len(message) > min(
            self.h2.local_flow_control_window(stream.id), self.h2.max_outbound_frame_size
        ):
            return False
        code = context.code() or grpc.StatusCode.OK
        try:
            self.h2.send_headers(stream.id, _RESPONSE_HEADERS)
            stream.headers_sent = True
            self.h2.send_data(stream.id, message)
            self.h2.send_headers(
                stream.id, _status_headers(code, context.details()), end_stream=True
            )
        except h2.exceptions.ProtocolError:
            pass
        self._forget(stream)
        self._flush()
        return True

    async def _send_message(self, stream: _Stream, payload: bytes) -> None:
        if not stream.headers_sent:
            self._check_open(stream)
            self.h2.send_headers(stream.id, _RESPONSE_HEADERS)
            stream.headers_sent = True
        message = memoryview(_PREFIX.pack(0, len(payload)) + payload)
        offset = 0
        while offset < len(message):
            self._check_open(stream)
            room = min(
                self.h2.local_flow_control_window(stream.id),
                self.h2.max_outbound_frame_size,
                len(message) - offset,
            )
            if room <= 0:
                if stream.window is None:
                    stream.window = asyncio.Event()
                stream.window.clear()
                self._flush()
                await stream.window.wait()
                continue
            self.h2.send_data(stream.id, message[offset : offset + room].tobytes())
            offset += room
        self._flush()
        while self.write_paused and not self.closed:
            if self.writable is None:
                self.writable = asyncio.Event()
            self.writable.clear()
            await self.writable.wait()
        self._check_open(stream)

    def _check_open(self, stream: _Stream) -> None:
        if self.closed or stream.id not in self.streams:
            raise _StreamGone

    def _end(self, stream: _Stream, code: grpc.StatusCode, details: str) -> None:
        if stream.id in self.streams and not self.closed:
            if stream.headers_sent:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.send_headers(stream.id, _status_headers(code, details), end_stream=True)
                self._forget(stream)
                self._flush()
            else:
                self._trailers_only(stream, code, details)
                self._flush()

    def _trailers_only(
        self,
        stream: _Stream,
        code: grpc.StatusCode,
        details: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [*_RESPONSE_HEADERS, *_status_headers(code, details), *(extra or [])]
        try:
            self.h2.send_headers(stream.id, headers, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        """The answer is complete; a request still arriving is cut short, as gRPC does."""
        if self.streams.pop(stream.id, None) is None:
            return
        self._release(stream)
        if not stream.request_ended and not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream.id, ErrorCodes.NO_ERROR)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.draining and not self.streams and self.idle is not None:
            self.idle.set()

    # -- shutting down ------------------------------------------------------------------
    def goaway(self) -> None:
        """Tell the client no new calls will be taken; the calls under way go on."""
        self.draining = True
        if self.closed or self.transport is None:
            return
        self._flush()
        frame = GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id, error_code=0)
        self.transport.write(frame.serialize())
        self.idle = asyncio.Event()
        if not self.streams:
            self.idle.set()

    def abandon(self) -> None:
        """The drain's time is up: end the calls left (UNAVAILABLE), then close."""
        for stream in list(self.streams.values()):
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()
            else:
                self._trailers_only(stream, grpc.StatusCode.UNAVAILABLE, "agent shutting down")
        self._flush()

    def close_now(self) -> None:
        if not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
            self._flush()
            self._close()


class _StreamGone(Exception):
    """The client reset the stream or went away: nobody is left to answer."""


class _RequestHeaders:
    """A request's HEADERS frame, split into what the transport reads and the metadata."""

    __slots__ = ("content_type", "encoding", "metadata", "method", "path", "timeout")

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.metadata: list[tuple[str, str | bytes]] = []
        found: dict[bytes, bytes] = {}
        for name, value in headers:
            if name.startswith(b":") or name in _TRANSPORT_HEADERS:
                found.setdefault(name, value)
            else:
                self.metadata.append(_metadata_item(name, value))
        self.method: bytes | None = found.get(b":method")
        self.path: bytes | None = found.get(b":path")
        self.content_type: bytes | None = found.get(b"content-type")
        self.encoding: bytes | None = found.get(b"grpc-encoding")
        self.timeout: bytes | None = found.get(b"grpc-timeout")


def _metadata_item(name: bytes, value: bytes) -> tuple[str, str | bytes]:
    key = name.decode("ascii", "replace")
    if key.endswith("-bin"):
        with contextlib.suppress(ValueError):
            return key, base64.b64decode(value + b"=" * (-len(value) % 4))
        return key, value
    return key, value.decode("ascii", "replace")


class GrpcUnixServer:
    """gRPC methods served on a Unix socket, each connection's caller recorded at accept."""

    def __init__(self, methods: dict[str, MethodHandler], limits: Limits | None = None) -> None:
        self.methods = methods
        self.limits = limits or Limits()
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[_Connection] = set()
        self._per_uid: dict[int, int] = {}
        self.refused_connections = 0
        self._refusal_logged = -_REFUSAL_LOG_INTERVAL

    async def serve_unix(self, path: str, *, mode: int = 0o777) -> None:
        sock = bind_unix_listener(path, mode)
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Connection(self), sock=sock
        )
        self._servers.append(server)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _admit(self, connection: _Connection) -> bool:
        """Count an accepted connection against its uid's and the server's limits."""
        assert connection.caller is not None
        uid = connection.caller.uid
        held = self._per_uid.get(uid, 0)
        if held >= self.limits.max_connections_per_uid or (
            len(self._connections) >= self.limits.max_connections
        ):
            self.refused_connections += 1
            now = time.monotonic()
            if now - self._refusal_logged >= _REFUSAL_LOG_INTERVAL:
                self._refusal_logged = now
                _log.warning(
                    "Workload API connection from uid %d (pid %d) closed: %d open from that "
                    "uid (limit %d), %d in all (limit %d); %d refused so far",
                    uid,
                    connection.caller.pid,
                    held,
                    self.limits.max_connections_per_uid,
                    len(self._connections),
                    self.limits.max_connections,
                    self.refused_connections,
                )
            return False
        self._per_uid[uid] = held + 1
        self._connections.add(connection)
        return True

    def _release(self, connection: _Connection) -> None:
        if connection not in self._connections:
            return  # refused at accept, or never admitted: it holds no count
        self._connections.discard(connection)
        assert connection.caller is not None
        uid = connection.caller.uid
        left = self._per_uid[uid] - 1
        if left:
            self._per_uid[uid] = left
        else:
            del self._per_uid[uid]

    async def stop(self, grace: float) -> None:
        """Stop accepting, GOAWAY every connection, let calls finish for `grace` seconds."""
        for server in self._servers:
            server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.goaway()
        waits = [c.idle.wait() for c in connections if c.idle is not None]
        if waits:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*waits)
        tasks: list[asyncio.Task[None]] = []
        for connection in connections:
            tasks.extend(s.task for s in connection.streams.values() if s.task is not None)
            connection.abandon()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for connection in connections:
            connection.close_now()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
