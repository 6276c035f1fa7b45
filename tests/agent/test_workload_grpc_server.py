"""The Workload API's own gRPC server (agent.workload.grpcserver), against grpcio's client.

The server runs on an event loop thread of this process with test methods, reached over its
real Unix socket by a real grpcio channel: the protocol's edges that the Workload API's calls
do not reach on their own (answers larger than the flow-control window, many calls on one
connection, cancellation, deadlines, compression, bytes that are no HTTP/2, the drain).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.workload.grpcserver import CallContext, GrpcUnixServer, MethodHandler, _grpc_message


def _same(data: bytes) -> bytes:
    return data


class Methods:
    """Test methods; what happened to them is recorded for the test to read."""

    def __init__(self) -> None:
        self.stream_ended = threading.Event()
        self.held_entered = threading.Event()
        self.release: asyncio.Event | None = None
        self.deadline_seen: list[float | None] = []

    async def echo(self, request: bytes, context: CallContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        caller = context.caller
        return b"%d:%d:%s:" % (caller.pid, caller.uid, str(metadata.get("x-test", "")).encode()) + (
            request
        )

    async def abort(self, request: bytes, context: CallContext) -> bytes:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, request.decode())

    async def fail(self, request: bytes, context: CallContext) -> bytes:
        raise RuntimeError("boom")

    async def big(self, request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        count, size = (int(x) for x in request.split(b","))
        for i in range(count):
            yield bytes([i % 256]) * size

    async def forever(self, request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()
        finally:
            self.stream_ended.set()

    async def slow(self, request: bytes, context: CallContext) -> bytes:
        self.deadline_seen.append(context.time_remaining())
        await asyncio.sleep(3600)
        return b""

    async def held(self, request: bytes, context: CallContext) -> bytes:
        assert self.release is not None
        self.held_entered.set()
        await self.release.wait()
        return b"released"


def _methods(m: Methods) -> dict[str, MethodHandler]:
    unary = {"Echo": m.echo, "Abort": m.abort, "Fail": m.fail, "Slow": m.slow, "Held": m.held}
    streams = {"Big": m.big, "Forever": m.forever}
    handlers = {
        f"/Test/{name}": MethodHandler(False, fn, _same, _same) for name, fn in unary.items()
    }
    handlers.update(
        {f"/Test/{name}": MethodHandler(True, fn, _same, _same) for name, fn in streams.items()}
    )
    return handlers


class Harness:
    """A GrpcUnixServer on its own loop thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.methods = Methods()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.path = str(tmp_path / "api.sock")
        self.server = GrpcUnixServer(_methods(self.methods))

        async def start() -> None:
            self.methods.release = asyncio.Event()
            await self.server.serve_unix(self.path)

        self.run(start())

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def channel(self, *options: tuple[str, Any]) -> grpc.Channel:
        return grpc.insecure_channel("unix:" + self.path, options=list(options))

    def close(self) -> None:
        self.run(self.server.stop(grace=0.1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def _unary(channel: grpc.Channel, name: str) -> Any:
    return channel.unary_unary(
        f"/Test/{name}", request_serializer=_same, response_deserializer=_same
    )


def _stream(channel: grpc.Channel, name: str) -> Any:
    return channel.unary_stream(
        f"/Test/{name}", request_serializer=_same, response_deserializer=_same
    )


def test_a_call_is_answered_with_the_connected_process_and_its_metadata(harness: Harness) -> None:
    with harness.channel() as channel:
        answer = _unary(channel, "Echo")(b"hello", metadata=[("x-test", "v")], timeout=10)

    assert answer == b"%d:%d:v:hello" % (os.getpid(), os.geteuid())


def test_an_unknown_method_is_unimplemented(harness: Harness) -> None:
    with harness.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        _unary(channel, "NoSuchMethod")(b"", timeout=10)

    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/Test/NoSuchMethod" in raised.value.details()


def test_an_abort_reaches_the_client_with_its_details_percent_encoded_and_back(
    harness: Harness,
) -> None:
    details = "refusé: 100% sure, \u2603 and a\nnewline"
    with harness.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        _unary(channel, "Abort")(details.encode(), timeout=10)

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details() == details


def test_grpc_message_is_percent_encoded_on_the_wire_as_the_grpc_protocol_asks() -> None:
    # grpcio's client decodes leniently (raw bytes pass), so the wire form is checked here:
    # bytes outside 0x20-0x7E and "%" itself are %XX, the rest as is
    assert _grpc_message("plain text: ok") == b"plain text: ok"
    assert _grpc_message("100% sure\n\u2603") == b"100%25 sure%0A%E2%98%83"


def test_a_handler_that_raises_answers_unknown_and_the_connection_goes_on(
    harness: Harness,
) -> None:
    with harness.channel() as channel:
        with pytest.raises(grpc.RpcError) as raised:
            _unary(channel, "Fail")(b"", timeout=10)
        after = _unary(channel, "Echo")(b"again", timeout=10)

    assert raised.value.code() == grpc.StatusCode.UNKNOWN
    assert after.endswith(b":again")


def test_answers_larger_than_the_flow_control_window_arrive_whole(harness: Harness) -> None:
    # 3 messages of 1 MiB each: 16 times the initial 64 KiB window, each (the client's window
    # kept at HTTP/2's default: grpc's BDP probing would otherwise widen it past 1 MiB)
    with harness.channel(("grpc.http2.bdp_probe", 0)) as channel:
        messages = list(_stream(channel, "Big")(b"3,1048576", timeout=30))

    assert [len(m) for m in messages] == [1048576] * 3
    assert [m[0] for m in messages] == [0, 1, 2]
    assert all(m == m[:1] * len(m) for m in messages)


def test_a_request_larger_than_the_window_is_read_and_one_past_the_limit_refused(
    harness: Harness,
) -> None:
    payload = os.urandom(1024 * 1024)
    with harness.channel() as channel:
        answer = _unary(channel, "Echo")(payload, timeout=30)
        with pytest.raises(grpc.RpcError) as raised:
            _unary(channel, "Echo")(b"x" * (5 * 1024 * 1024), timeout=30)
        after = _unary(channel, "Echo")(b"still", timeout=10)

    assert answer.endswith(payload)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the server's refusal, not the client's own receive limit on an echoed answer
    assert "request larger than" in (raised.value.details() or "")
    assert after.endswith(b":still")


def test_many_concurrent_calls_on_one_connection_each_get_their_own_answer(
    harness: Harness,
) -> None:
    with harness.channel() as channel:
        echo = _unary(channel, "Echo")
        futures = [echo.future(b"call-%d" % i, timeout=30) for i in range(200)]
        answers = [f.result() for f in futures]

    assert [a.rsplit(b":", 1)[1] for a in answers] == [b"call-%d" % i for i in range(200)]


def test_cancelling_a_stream_ends_its_handler(harness: Harness) -> None:
    with harness.channel() as channel:
        call = _stream(channel, "Forever")(b"", timeout=30)
        assert next(call) == b"first"

        call.cancel()

        assert harness.methods.stream_ended.wait(10)
        assert _unary(channel, "Echo")(b"alive", timeout=10).endswith(b":alive")


def test_a_client_that_goes_away_ends_its_stream_handler(harness: Harness) -> None:
    channel = harness.channel()
    call = _stream(channel, "Forever")(b"", timeout=30)
    assert next(call) == b"first"

    channel.close()

    assert harness.methods.stream_ended.wait(10)


def test_the_deadline_reaches_the_handler_and_ends_the_call(harness: Harness) -> None:
    with harness.channel() as channel:
        # connected first: the deadline is then the call's alone (on a loaded machine the
        # connection could take it all, and the call never reach the handler)
        grpc.channel_ready_future(channel).result(timeout=30)
        with pytest.raises(grpc.RpcError) as raised:
            _unary(channel, "Slow")(b"", timeout=1.0)

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    (remaining,) = harness.methods.deadline_seen
    assert remaining is not None
    assert 0 < remaining <= 1.1  # what grpc sent: its timeout, rounded up to its units


def test_a_compressed_request_is_refused_as_unimplemented(harness: Harness) -> None:
    with harness.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        _unary(channel, "Echo")(b"z" * 1000, timeout=10, compression=grpc.Compression.Gzip)

    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "identity" in raised.value.details()


def test_bytes_that_are_no_http2_close_that_connection_and_no_other(harness: Harness) -> None:
    with harness.channel() as channel:
        call = _stream(channel, "Forever")(b"", timeout=30)
        assert next(call) == b"first"

        garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        garbage.settimeout(10)
        garbage.connect(harness.path)
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
        while garbage.recv(65536):  # the server's SETTINGS and GOAWAY, then the end
            pass
        garbage.close()

        assert not harness.methods.stream_ended.is_set()
        assert _unary(channel, "Echo")(b"alive", timeout=10).endswith(b":alive")
        call.cancel()


def test_stopping_lets_a_call_under_way_finish_and_refuses_new_connections(
    harness: Harness,
) -> None:
    with harness.channel() as channel:
        held = _unary(channel, "Held")
        future = held.future(b"", timeout=30)
        assert harness.methods.held_entered.wait(10)

        stopping = harness.submit(harness.server.stop(grace=20))
        time.sleep(0.2)
        assert not stopping.done()  # the drain waits for the call under way
        assert harness.methods.release is not None
        harness.loop.call_soon_threadsafe(harness.methods.release.set)

        assert future.result() == b"released"
        stopping.result(20)

    with pytest.raises(OSError):
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(harness.path)


def test_a_stream_still_open_when_the_drain_runs_out_is_ended_unavailable(
    harness: Harness,
) -> None:
    with harness.channel() as channel:
        call = _stream(channel, "Forever")(b"", timeout=30)
        assert next(call) == b"first"

        harness.run(harness.server.stop(grace=0.2))

        with pytest.raises(grpc.RpcError) as raised:
            next(call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert harness.methods.stream_ended.is_set()


class RawHttp2:
    """A bare HTTP/2 client (the h2 state machine) on the server's socket, for what grpcio's
    client never sends: wrong methods and content types, a compressed flag without an
    encoding, a malformed grpc-timeout, a PING."""

    def __init__(self, path: str) -> None:
        import h2.config
        import h2.connection

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())

    def request(
        self, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """Send one request; (response headers, data, trailers) once the stream ends."""
        import h2.events

        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=not body)
        unsent = body
        response: dict[str, str] = {}
        trailers: dict[str, str] = {}
        data = b""
        while True:
            # The body goes as the server's flow-control windows allow: a server that stops
            # acknowledging what it received stalls this request (a socket timeout).
            while unsent:
                room = min(
                    self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
                )
                if room <= 0:
                    break
                self.h2.send_data(stream_id, unsent[:room], end_stream=len(unsent) <= room)
                unsent = unsent[room:]
            self.sock.sendall(self.h2.data_to_send())
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            for event in self.h2.receive_data(chunk):
                if getattr(event, "stream_id", None) != stream_id:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    response = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    self.sock.sendall(self.h2.data_to_send())
                    return response, data, trailers

    def start(self, stream_id: int, path: str, payload: bytes = b"") -> None:
        """Open a call and send its one request message; read nothing."""
        self.h2.send_headers(stream_id, _grpc_request(path))
        self.h2.send_data(stream_id, _message(payload), end_stream=True)
        self.sock.sendall(self.h2.data_to_send())

    def ping(self) -> bool:
        import h2.events

        self.h2.ping(b"hallmark")
        self.sock.sendall(self.h2.data_to_send())
        while chunk := self.sock.recv(65536):
            for event in self.h2.receive_data(chunk):
                if isinstance(event, h2.events.PingAckReceived):
                    return event.ping_data == b"hallmark"
        return False


def _grpc_request(path: str = "/Test/Echo", **extra: str) -> list[tuple[str, str]]:
    headers = {
        ":method": "POST",
        ":scheme": "http",
        ":path": path,
        ":authority": "localhost",
        "content-type": "application/grpc",
        "te": "trailers",
    }
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return list(headers.items())


def _message(payload: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(payload).to_bytes(4, "big") + payload


def test_what_is_no_grpc_request_gets_an_http_answer_and_no_call(harness: Harness) -> None:
    client = RawHttp2(harness.path)

    not_post, _, _ = client.request([(":method", "GET"), *_grpc_request()[1:]], b"")
    not_grpc, _, _ = client.request(
        [*_grpc_request()[:4], ("content-type", "application/json")], _message(b"x")
    )

    assert not_post[":status"] == "405"
    assert not_grpc[":status"] == "415"


def test_an_error_before_any_message_is_a_trailers_only_answer(harness: Harness) -> None:
    client = RawHttp2(harness.path)

    headers, data, trailers = client.request(_grpc_request("/Test/Nope"), _message(b""))

    assert headers[":status"] == "200"
    assert headers["content-type"] == "application/grpc"
    assert headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
    assert data == b""
    assert trailers == {}


def test_an_answer_is_headers_one_message_and_trailers(harness: Harness) -> None:
    client = RawHttp2(harness.path)

    headers, data, trailers = client.request(_grpc_request(), _message(b"hi"))

    assert headers[":status"] == "200"
    assert "grpc-status" not in headers
    assert data == _message(b"%d:%d::hi" % (os.getpid(), os.geteuid()))
    assert trailers["grpc-status"] == "0"


def test_a_compressed_message_without_an_encoding_is_refused_internal(harness: Harness) -> None:
    client = RawHttp2(harness.path)

    headers, _, _ = client.request(_grpc_request(), _message(b"x", flag=1))

    assert headers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])
    assert "compressed" in headers["grpc-message"]


def test_a_malformed_grpc_timeout_is_refused(harness: Harness) -> None:
    client = RawHttp2(harness.path)

    headers, _, _ = client.request(_grpc_request(grpc_timeout="soon"), _message(b"x"))

    assert headers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])


def test_a_ping_is_answered(harness: Harness) -> None:
    assert RawHttp2(harness.path).ping()


def test_the_server_announces_its_stream_and_header_limits(harness: Harness) -> None:
    # a client learns what one connection may hold from the server's SETTINGS (mutation
    # testing: dropping them left every other test passing)
    import h2.events
    import h2.settings

    from agent.workload.grpcserver import Limits

    client = RawHttp2(harness.path)  # the harness's server runs at the default limits
    settings: dict[int, int] = {}
    while not settings:
        chunk = client.sock.recv(65536)
        assert chunk, "the server closed the connection"
        for event in client.h2.receive_data(chunk):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                settings = {code: c.new_value for code, c in event.changed_settings.items()}

    codes = h2.settings.SettingCodes
    assert settings[codes.MAX_CONCURRENT_STREAMS] == Limits().max_concurrent_streams
    assert settings[codes.MAX_HEADER_LIST_SIZE] == Limits().max_header_list_size


def test_a_connection_whose_caller_cannot_be_read_is_closed_and_not_kept() -> None:
    # the peer's credentials cannot be read (here: its socket is already gone), so no call
    # on the connection could be attested: it is closed at once and never counted
    from agent.workload.grpcserver import _Connection

    class Transport(asyncio.Transport):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__()
            self.sock, self.closed = sock, False

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return self.sock if name == "socket" else default

        def close(self) -> None:
            self.closed = True

    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.close()
    server = GrpcUnixServer({})
    connection = _Connection(server)
    transport = Transport(gone)

    connection.connection_made(transport)

    assert transport.closed
    assert connection.caller is None
    assert server.connections == 0


def test_a_request_of_exactly_the_message_limit_is_served(harness: Harness) -> None:
    from agent.workload.grpcserver import Limits

    payload = b"y" * Limits().max_request_message
    with harness.channel(
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)
    ) as channel:
        answer = _unary(channel, "Echo")(payload, timeout=30)

    assert answer.endswith(payload)


class LimitedServer:
    """A GrpcUnixServer with small limits on its own loop thread (the harness's are the
    defaults), so that a test reaches them with a few frames."""

    def __init__(self, tmp_path: Path, **limits: int) -> None:
        from agent.workload.grpcserver import Limits

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.path = str(tmp_path / "limited.sock")
        self.server = GrpcUnixServer(_methods(Methods()), Limits(**limits))
        asyncio.run_coroutine_threadsafe(self.server.serve_unix(self.path), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=0.1), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_refused_oversize_requests_do_not_use_up_the_connections_window(
    tmp_path: Path,
) -> None:
    # given a server refusing requests over 1 KiB, and one connection (its flow-control
    # window: 65,535 bytes)
    server = LimitedServer(tmp_path, max_request_message=1024)
    try:
        client = RawHttp2(server.path)
        # when five requests of ~60 KB are refused, each at its first frame of 16 KiB (the
        # client has sent the rest by then): four such frames left unacknowledged, or the
        # rest of two requests, would be the whole window
        for _ in range(5):
            headers, _, _ = client.request(_grpc_request(), _message(b"x" * 60_000))
            # trailers-only: the status comes in the answer's one HEADERS frame
            assert headers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])

        # then the connection still carries requests (their window was given back)
        _, data, trailers = client.request(_grpc_request(), _message(b"y" * 1000))
    finally:
        server.close()
    assert trailers["grpc-status"] == "0"
    assert data.endswith(b"y" * 1000)


def test_requests_held_past_the_buffer_limit_are_acknowledged_once_consumed(
    tmp_path: Path,
) -> None:
    # given a server that acknowledges at most 16 KiB of unread requests a connection (it
    # withholds the rest until a request is consumed, so the client waits)
    server = LimitedServer(tmp_path, max_buffered_request_bytes=16 * 1024)
    try:
        client = RawHttp2(server.path)
        # when request after request of ~60 KB goes over one connection: ~44 KB of each
        # is withheld until its call starts, twice that is more than the window
        answers = [client.request(_grpc_request(), _message(b"z" * 60_000)) for _ in range(4)]
    finally:
        server.close()

    # then every one was served: what was withheld was acknowledged once consumed
    assert [t["grpc-status"] for _, _, t in answers] == ["0"] * 4
    assert all(data.endswith(b"z" * 60_000) for _, data, _ in answers)


def _frames(sock: socket.socket, until: Callable[[int, int, bytes], bool]) -> list[tuple[int, int]]:
    """Read raw HTTP/2 frames (type, stream id) until `until(type, stream, payload)`."""
    frames, pending = [], b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        pending += chunk
        while len(pending) >= 9:
            length = int.from_bytes(pending[:3], "big")
            if len(pending) < 9 + length:
                break
            kind, stream = pending[3], int.from_bytes(pending[5:9], "big") & 0x7FFFFFFF
            payload, pending = pending[9 : 9 + length], pending[9 + length :]
            frames.append((kind, stream))
            if until(kind, stream, payload):
                return frames


def test_a_call_opened_as_the_drain_begins_is_refused_at_once(harness: Harness) -> None:
    # HTTP/2 frame types and the REFUSED_STREAM error code (RFC 9113)
    headers_frame, rst_stream_frame, goaway_frame, refused_stream = 0x1, 0x3, 0x7, 0x7
    client = RawHttp2(harness.path)
    # given a call under way on a connection, which keeps the drain waiting
    client.start(1, "/Test/Held")
    assert harness.methods.held_entered.wait(10)
    stopping = harness.submit(harness.server.stop(grace=20))
    try:
        # and the server's GOAWAY, not yet seen by the client (read raw, h2 never hears it)
        _frames(client.sock, lambda kind, stream, payload: kind == goaway_frame)

        # when the client opens a call in that race
        client.start(3, "/Test/Echo", b"late")

        # then that call is refused with REFUSED_STREAM (safe to retry elsewhere), not run
        refused: list[bytes] = []

        def answered(kind: int, stream: int, payload: bytes) -> bool:
            if kind == rst_stream_frame and stream == 3:
                refused.append(payload)
            return stream == 3 and kind in (headers_frame, rst_stream_frame)

        frames = _frames(client.sock, answered)
        assert (headers_frame, 3) not in frames
        assert refused == [refused_stream.to_bytes(4, "big")]
    finally:
        assert harness.methods.release is not None
        harness.loop.call_soon_threadsafe(harness.methods.release.set)
        stopping.result(20)


def _served(path: str) -> bool:
    """Whether a new connection to `path` is served (a PING answered); False when the server
    closed it (end of stream or a reset), and a test failure when it was left open unserved."""
    try:
        client = RawHttp2(path)
    except ConnectionError:  # reset by the server while the preface was sent
        return False
    try:
        return client.ping()
    except ConnectionError:
        return False
    except TimeoutError:
        pytest.fail("the connection was neither served nor closed")


def test_one_uid_holds_at_most_its_connections_and_gets_one_back_when_one_closes(
    tmp_path: Path,
) -> None:
    server = LimitedServer(tmp_path, max_connections_per_uid=2)
    try:
        # given two connections of this uid, served
        first, second = RawHttp2(server.path), RawHttp2(server.path)
        assert first.ping() and second.ping()

        # when it opens more, each is closed at accept (a refused connection gives back no
        # count of the two that are open), and the two go on
        assert [_served(server.path) for _ in range(3)] == [False] * 3
        assert first.ping() and second.ping()
        assert server.server.refused_connections == 3
        assert server.server.connections == 2

        # and when one of its connections closes, a new one is served again
        first.sock.close()
        deadline = time.monotonic() + 10
        while server.server.connections > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.server.connections == 1
        third = RawHttp2(server.path)
        assert third.ping()
        # (one, not more: the uid is at its limit again)
        assert not _served(server.path)
    finally:
        server.close()


def test_a_uid_at_its_limit_leaves_other_uids_their_connections() -> None:
    from tests.agent.conftest import run_as

    # the socket where uid 65534 can reach it (pytest's tmp_path is root's alone)
    public = Path(tempfile.mkdtemp(prefix="hallmark-wl-limit-"))
    public.chmod(0o755)
    server = LimitedServer(public, max_connections_per_uid=2)
    try:
        # given this uid (root) at its limit
        held = [RawHttp2(server.path), RawHttp2(server.path)]
        assert all(c.ping() for c in held)
        assert not _served(server.path)

        # when another uid connects, it is served
        result = run_as(65534, _PING_AS_ANOTHER_UID, server.path)
    finally:
        server.close()
        shutil.rmtree(public, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "served"


_PING_AS_ANOTHER_UID = """
import socket
import tempfile
import h2.config, h2.connection, h2.events
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect(sys.argv[1])
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
conn.ping(b"otheruid")
sock.sendall(conn.data_to_send())
answered = False
while not answered and (chunk := sock.recv(65536)):
    answered = any(isinstance(e, h2.events.PingAckReceived) for e in conn.receive_data(chunk))
print("served" if answered else "closed")
"""


def test_connections_past_the_servers_total_are_closed_at_accept(tmp_path: Path) -> None:
    server = LimitedServer(tmp_path, max_connections=2, max_connections_per_uid=100)
    try:
        held = [RawHttp2(server.path), RawHttp2(server.path)]
        assert all(c.ping() for c in held)

        assert not _served(server.path)
        assert server.server.connections == 2
    finally:
        server.close()


_BUDGET = """
import resource, sys
from agent.workload.grpcserver import connection_budget
soft, hard = (int(v) for v in sys.argv[1:3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
budget = connection_budget(cap=4096, reserve=256)
print(budget, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(
    ("soft", "hard", "budget", "raised_to"),
    [
        (1024, 10_000, 4096, 4352),  # the soft limit raised toward the hard one
        (1024, 2048, 1792, 2048),  # ... as far as the hard one allows
        (300, 300, 44, 300),  # no room to raise: the limit less the reserve
        (100, 100, 1, 100),  # below the reserve: still one connection
        (8192, 8192, 4096, 8192),  # never more than the cap
    ],
)
def test_the_connection_budget_follows_the_descriptor_limit(
    soft: int, hard: int, budget: int, raised_to: int
) -> None:
    import subprocess
    import sys

    answer = subprocess.run(
        [sys.executable, "-c", _BUDGET, str(soft), str(hard)],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(Path(__file__).resolve().parents[2]),
    )

    assert answer.stdout.split() == [str(budget), str(raised_to)]


def test_refused_connections_are_logged_once_in_ten_seconds_and_all_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = LimitedServer(tmp_path, max_connections_per_uid=1)
    try:
        held = RawHttp2(server.path)
        assert held.ping()
        with caplog.at_level("WARNING", logger="agent.workload.grpcserver"):
            assert [_served(server.path) for _ in range(3)] == [False] * 3
    finally:
        server.close()
    lines = [r.getMessage() for r in caplog.records if "connection from uid" in r.getMessage()]
    assert len(lines) == 1
    assert "1 open from that uid (limit 1)" in lines[0]
    assert server.server.refused_connections == 3


def test_a_client_that_leaves_during_the_drain_does_not_hold_it_for_its_grace(
    harness: Harness,
) -> None:
    goaway_frame = 0x7
    client = RawHttp2(harness.path)
    # given a call under way, and the drain started with a long grace
    client.start(1, "/Test/Held")
    assert harness.methods.held_entered.wait(10)
    stopping = harness.submit(harness.server.stop(grace=600))
    _frames(client.sock, lambda kind, stream, payload: kind == goaway_frame)

    # when the client goes away
    client.sock.close()

    # then the drain ends without waiting out its grace (the call it held is gone)
    stopping.result(60)


def test_a_client_that_closes_its_socket_without_a_reset_ends_its_stream_handler(
    harness: Harness,
) -> None:
    # given a server stream under way on a raw connection (grpcio resets its streams before
    # it closes; this client just goes)
    client = RawHttp2(harness.path)
    client.start(1, "/Test/Forever")
    data_frame = 0x0
    _frames(client.sock, lambda kind, stream, payload: kind == data_frame and stream == 1)

    # when the socket closes
    client.sock.close()

    # then the handler is cancelled
    assert harness.methods.stream_ended.wait(10)


def test_bodies_sent_with_requests_answered_405_or_415_do_not_use_up_the_window(
    harness: Harness,
) -> None:
    client = RawHttp2(harness.path)
    # when requests that are no gRPC calls arrive with bodies of ~60 KB (answered from their
    # headers; the client has sent the body by then), three of them: twice that is more
    # than the connection's window
    for _ in range(3):
        headers, _, _ = client.request(
            [*_grpc_request()[:4], ("content-type", "text/plain")], b"b" * 60_000
        )
        assert headers[":status"] == "415"

    # then the connection still carries a call
    _, data, trailers = client.request(_grpc_request(), _message(b"after"))
    assert trailers["grpc-status"] == "0"
    assert data.endswith(b"after")
