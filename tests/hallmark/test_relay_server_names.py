"""The relay's ClientHello peek: a refused server name is answered before any TLS object.

Real TCP and TLS on loopback. The server context's SNI callback counts the handshakes that
reached TLS: a refused name must never get there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import ssl
import time
from pathlib import Path

from hallmark.relay import PeerRegistry, Relay, RelayLimits, private_socket_path
from tests.hallmark.relay_helpers import client_context, round_trip, server_context, start_echo
from tests.hallmark.test_clienthello import client_hello

KNOWN = "known.test"


async def _relay(
    tmp_path: Path, reached_tls: list[str], limits: RelayLimits | None = None
) -> tuple[Relay[str], int, object]:
    inner = private_socket_path(str(tmp_path / "private"))
    echo = await start_echo(inner)
    context = server_context(tmp_path)

    def sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        reached_tls.append(name or "")
        return None

    context.sni_callback = sni

    async def identify(writer: asyncio.StreamWriter) -> str:
        return "peer"

    relay: Relay[str] = Relay(inner, PeerRegistry(), identify)
    port = await relay.serve_tls(
        "127.0.0.1",
        0,
        context,
        limits=limits or RelayLimits(handshake_timeout=10),
        server_name_filter=lambda name: name == KNOWN,
    )
    return relay, port, echo


async def _handshake(port: int, name: str | None) -> str:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(), server_hostname=name or ""
            ),
            10,
        )
    except ssl.SSLError as error:
        return str(error.reason)
    except ConnectionError as error:
        return type(error).__name__
    try:
        return "echoed" if await round_trip(reader, writer) == b"ping" else "no echo"
    finally:
        writer.close()


async def _raw(port: int, *parts: bytes) -> bytes:
    """Send `parts` with a pause between them; what the server answered before closing."""
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in parts:
            sock.sendall(part)
            await asyncio.sleep(0.05)
        answer = b""
        while chunk := await loop.run_in_executor(None, sock.recv, 4096):
            answer += chunk
        return answer


def _send_and_read(port: int, data: bytes) -> bytes:
    """Send `data` on a blocking connection; all the server answered before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


def test_an_unknown_name_is_refused_before_tls_and_a_known_one_is_served(tmp_path: Path) -> None:
    async def scenario() -> None:
        reached_tls: list[str] = []
        relay, port, echo = await _relay(tmp_path, reached_tls)
        try:
            # when strangers name trust domains nobody has (and one names none)
            refused = [await _handshake(port, f"nx-{i}.flood.test") for i in range(5)]
            nameless = await _handshake(port, None)

            # then each is answered unrecognized_name, and none reached the TLS machinery
            assert refused == ["TLSV1_UNRECOGNIZED_NAME"] * 5
            assert nameless == "TLSV1_UNRECOGNIZED_NAME"
            assert reached_tls == []
            assert relay.refused_names == 6

            # and a name the filter knows takes the full handshake and is relayed
            assert await _handshake(port, KNOWN) == "echoed"
            assert reached_tls == [KNOWN]
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_client_hello_split_over_segments_is_read_whole(tmp_path: Path) -> None:
    async def scenario() -> None:
        reached_tls: list[str] = []
        relay, port, echo = await _relay(tmp_path, reached_tls)
        hello = client_hello("nx.flood.test")
        try:
            # when a ClientHello for an unknown name arrives in three pieces
            answer = await _raw(port, hello[:3], hello[3:40], hello[40:])

            # then it is refused with the alert all the same, before TLS
            assert answer == bytes([21, 3, 3, 0, 2, 2, 112])
            assert reached_tls == [] and relay.refused_names == 1
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_bytes_that_are_no_tls_are_closed_without_tls(tmp_path: Path) -> None:
    async def scenario() -> None:
        reached_tls: list[str] = []
        relay, port, echo = await _relay(tmp_path, reached_tls)
        try:
            answer = await _raw(port, b"GET / HTTP/1.1\r\nHost: known.test\r\n\r\n")
            assert answer == b""
            assert reached_tls == [] and relay.sources == {}
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_refused_name_waits_for_its_answer_as_a_connection_of_its_source(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        reached_tls: list[str] = []
        limits = RelayLimits(max_connections_per_source=3, refused_name_delay=600)
        relay, port, echo = await _relay(tmp_path, reached_tls, limits)
        held: list[socket.socket] = []
        try:
            # when one source sends three ClientHellos naming trust domains nobody has (one
            # of them in pieces, so it is decided after the accept)
            for i in range(3):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                hello = client_hello(f"nx-{i}.flood.test")
                if i == 2:
                    sock.sendall(hello[:3])
                    await asyncio.sleep(0.05)
                    sock.sendall(hello[3:])
                else:
                    sock.sendall(hello)
                held.append(sock)
            for _ in range(200):
                if relay.sources.get("127.0.0.1") == 3:
                    break
                await asyncio.sleep(0.05)

            # then none is answered yet: each waits as one of its source's connections, so
            # its next connection is refused at accept; another source is served meanwhile
            assert relay.sources["127.0.0.1"] == 3 and relay.refused_names == 0
            assert await _handshake(port, "nx-more.flood.test") in {
                "ConnectionResetError",
                "UNEXPECTED_EOF_WHILE_READING",
                "EOF occurred in violation of protocol",
            }
            assert relay.refused == 1
            assert reached_tls == []
        finally:
            for sock in held:
                sock.close()
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_held_refusal_is_answered_with_the_alert_after_its_delay(tmp_path: Path) -> None:
    async def scenario() -> None:
        reached_tls: list[str] = []
        relay, port, echo = await _relay(tmp_path, reached_tls, RelayLimits(refused_name_delay=0.2))
        try:
            refused = [await _handshake(port, f"nx-{i}.flood.test") for i in range(2)]
            assert refused == ["TLSV1_UNRECOGNIZED_NAME"] * 2
            assert relay.refused_names == 2 and reached_tls == [] and not relay.sources
            assert await _handshake(port, KNOWN) == "echoed"
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_client_hellos_already_queued_at_accept_are_decided_there(tmp_path: Path) -> None:
    # The relay peeks at a connection as it accepts it; most tests' ClientHellos arrive a
    # moment later, so they are decided by the handshake task instead. Here the event loop is
    # held while two clients connect and send theirs: both are queued when accepted.
    async def scenario() -> None:
        reached_tls: list[str] = []
        # a handshake deadline well past the refused client's 10 s read timeout: a refusal
        # answered at accept must also be closed there, not held by a task until the deadline
        limits = RelayLimits(handshake_timeout=60)
        relay, port, echo = await _relay(tmp_path, reached_tls, limits)
        loop = asyncio.get_running_loop()
        hello = client_hello("nx.flood.test")

        def agent() -> bytes:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_context().wrap_socket(raw, server_hostname=KNOWN) as tls,
            ):
                tls.sendall(b"ping")
                return tls.recv(4)

        try:
            refused, admitted = (
                loop.run_in_executor(None, _send_and_read, port, hello),
                loop.run_in_executor(None, agent),
            )
            time.sleep(0.5)  # holds the loop: nothing is accepted meanwhile

            # then the stranger is refused with the alert and closed, and the known name relayed
            assert await refused == bytes([21, 3, 3, 0, 2, 2, 112])
            assert await admitted == b"ping"
            assert reached_tls == [KNOWN]
            # and nothing of either connection is left behind
            for _ in range(100):
                if relay._accepting <= relay._accept_loops and not relay.sources:
                    break
                await asyncio.sleep(0.05)
            assert relay._accepting <= relay._accept_loops and relay.sources == {}
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_closing_the_relay_ends_a_connection_still_waiting_for_its_client_hello(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        relay, port, echo = await _relay(tmp_path, [])
        loop = asyncio.get_running_loop()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
                await asyncio.sleep(0.2)  # accepted; its handshake waits (10 s allowed)
                await relay.close()
                # then the connection ends now, not at the handshake timeout
                assert await loop.run_in_executor(None, silent.recv, 1) == b""
        finally:
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_client_hello_larger_than_one_record_takes_the_full_handshake(tmp_path: Path) -> None:
    # a ClientHello over 16 KiB (a long ALPN list) spans two TLS records: the peek cannot read
    # its name, so the full handshake decides, and a known name is served
    async def scenario() -> None:
        reached_tls: list[str] = []
        relay, port, echo = await _relay(tmp_path, reached_tls)
        context = client_context()
        context.set_alpn_protocols([f"p{i:03d}-" + "x" * 190 for i in range(100)])
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=KNOWN),
                10,
            )
            try:
                assert await round_trip(reader, writer) == b"ping"
            finally:
                writer.close()
            assert reached_tls == [KNOWN]
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_refusal_held_from_accept_is_answered_with_the_alert_after_its_delay(
    tmp_path: Path,
) -> None:
    # the ClientHello is queued when the relay accepts (the loop is held meanwhile), so the
    # refusal is held from accept (Relay._hold), not by a handshake task
    async def scenario() -> None:
        relay, port, echo = await _relay(tmp_path, [], RelayLimits(refused_name_delay=0.2))
        loop = asyncio.get_running_loop()
        hello = client_hello("nx.flood.test")

        try:
            refused = loop.run_in_executor(None, _send_and_read, port, hello)
            time.sleep(0.5)  # holds the loop: nothing is accepted meanwhile
            assert await refused == bytes([21, 3, 3, 0, 2, 2, 112])
            assert relay.refused_names == 1 and relay.sources == {}
            assert relay._held == {}  # the answered refusal is no longer held
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def _held_on_work(relay: Relay[str]) -> tuple[list[str], concurrent.futures.Future[None]]:
    """Make every admitted name wait for one piece of work; the names asked for, the work."""
    asked: list[str] = []
    work: concurrent.futures.Future[None] = concurrent.futures.Future()

    def before_handshake(name: str) -> concurrent.futures.Future[None]:
        asked.append(name)
        return work

    relay.before_handshake = before_handshake
    return asked, work


def test_a_client_hello_in_pieces_waits_for_the_work_too(tmp_path: Path) -> None:
    async def scenario() -> None:
        reached_tls: list[str] = []
        relay, port, echo = await _relay(tmp_path, reached_tls, RelayLimits(handshake_timeout=3))
        asked, work = _held_on_work(relay)
        hello = client_hello(KNOWN)
        try:
            # when a ClientHello naming a known trust domain arrives in two pieces (decided
            # after the accept), while the work is not done
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(hello[:3])
                await asyncio.sleep(0.05)
                sock.sendall(hello[3:])
                await asyncio.sleep(0.3)

                # then it waits before TLS, and reaches it once the work is done
                assert asked == [KNOWN]
                assert reached_tls == []
                work.set_result(None)
                for _ in range(100):
                    if reached_tls:
                        break
                    await asyncio.sleep(0.02)
                assert reached_tls == [KNOWN]
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_work_that_never_ends_holds_a_handshake_for_half_its_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        reached_tls: list[str] = []
        relay, port, echo = await _relay(tmp_path, reached_tls, RelayLimits(handshake_timeout=1))
        _, never = _held_on_work(relay)
        try:
            # when the work a known name waits for never ends, then the handshake goes on
            # after half its time and completes in the other half: a wait to the deadline
            # would leave it none (cut off), a wait without bound would hang the client
            assert await _handshake(port, KNOWN) == "echoed"
            assert reached_tls == [KNOWN]
            assert not never.cancelled()  # the work is not the connection's to cancel
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_client_hello_there_at_accept_waits_for_the_work_too(tmp_path: Path) -> None:
    async def scenario() -> None:
        reached_tls: list[str] = []
        relay, port, echo = await _relay(tmp_path, reached_tls)
        asked, work = _held_on_work(relay)
        loop = asyncio.get_running_loop()
        try:
            # when a client connects and sends its ClientHello while the relay's loop is
            # busy, so that the relay finds the name already there when it accepts (decided
            # at accept, with no task of its own peeking), while the work is not done
            handshake = loop.run_in_executor(None, _blocking_handshake, port, KNOWN)
            time.sleep(0.3)  # the loop is busy: the kernel queues the connection and hello
            await asyncio.sleep(0.3)

            # then it waits before TLS all the same, and goes on once the work is done
            assert asked == [KNOWN]
            assert reached_tls == []
            work.set_result(None)
            assert await handshake == "accepted"
            assert reached_tls == [KNOWN]
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def _blocking_handshake(port: int, name: str) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client_context().wrap_socket(raw, server_hostname=name),
    ):
        return "accepted"
