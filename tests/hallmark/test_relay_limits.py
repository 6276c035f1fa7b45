"""The relay's public TLS listener: per-source connection limits and idle timeouts.

Real TCP and TLS on loopback: 127.0.0.1 floods, 127.0.0.2 is everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from hallmark.relay import (
    REFUSED_SOURCE,
    PeerRegistry,
    Relay,
    RelayLimits,
    private_socket_path,
)
from tests.hallmark.relay_helpers import client_context, round_trip, server_context, start_echo

FLOODER, OTHER = "127.0.0.1", "127.0.0.2"


async def _relay(tmp_path: Path, limits: RelayLimits) -> tuple[Relay[str], int, object]:
    inner = private_socket_path(str(tmp_path / "private"))
    echo = await start_echo(inner)

    async def identify(writer: asyncio.StreamWriter) -> str:
        return "peer"

    relay: Relay[str] = Relay(inner, PeerRegistry(), identify)
    port = await relay.serve_tls("127.0.0.1", 0, server_context(tmp_path), limits=limits)
    return relay, port, echo


async def _tls(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=client_context(), local_addr=(source, 0)),
        10,
    )


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_one_source_cannot_hold_more_than_its_connections(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = RelayLimits(max_connections_per_source=3, handshake_timeout=60)
        relay, port, echo = await _relay(tmp_path, limits)
        held = []
        try:
            # given one source holding its 3 connections without ever finishing a handshake
            for _ in range(3):
                held.append(await asyncio.open_connection("127.0.0.1", port))

            # when it opens more
            extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]

            # then each extra one is closed by the relay at once
            for reader, writer in extra:
                assert await _closed_by_server(reader)
                writer.close()
            # and another source is still served
            reader, writer = await _tls(port, OTHER)
            assert await round_trip(reader, writer) == b"ping"
            writer.close()

            # and once the source lets go, it may connect again
            for _, writer in held:
                writer.close()
            for _ in range(200):
                if FLOODER not in relay.sources:
                    break
                await asyncio.sleep(0.05)
            reader, writer = await _tls(port, FLOODER)
            assert await round_trip(reader, writer) == b"ping"
            writer.close()
        finally:
            for _, writer in held:
                writer.close()
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_an_idle_connection_is_closed_and_an_active_one_is_not(tmp_path: Path) -> None:
    async def scenario() -> None:
        relay, port, echo = await _relay(tmp_path, RelayLimits(idle_timeout=1.0))
        try:
            # given two relayed TLS connections that have both exchanged data
            idle_reader, idle_writer = await _tls(port, FLOODER)
            active_reader, active_writer = await _tls(port, OTHER)
            assert await round_trip(idle_reader, idle_writer) == b"ping"

            # when one keeps talking, several idle timeouts long, and the other says nothing
            for _ in range(30):
                assert await round_trip(active_reader, active_writer) == b"ping"
                await asyncio.sleep(0.1)

            # then the silent one is closed by the relay, the talking one still works
            assert await _closed_by_server(idle_reader)
            assert await round_trip(active_reader, active_writer) == b"ping"
            for writer in (idle_writer, active_writer):
                with contextlib.suppress(Exception):
                    writer.close()
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_limits_refuse_nonsense() -> None:
    import pytest

    from hallmark.relaylimits import RelayLimitsError as RelayError

    with pytest.raises(RelayError):
        RelayLimits(max_connections_per_source=0)
    with pytest.raises(RelayError):
        RelayLimits(idle_timeout=0)


def test_an_ipv6_host_counts_as_its_whole_64() -> None:
    from hallmark.relay import source_of

    # addresses of one /64 are one source; another /64 is another; IPv4 stays per address
    assert source_of("2001:db8:1:2::1") == source_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.7") == source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("192.0.2.8") != source_of("192.0.2.7")


def test_a_source_the_filter_refuses_is_closed_at_accept_and_others_are_served(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        inner = private_socket_path(str(tmp_path / "private"))
        echo = await start_echo(inner)

        async def identify(writer: asyncio.StreamWriter) -> str:
            return "peer"

        relay: Relay[str] = Relay(inner, PeerRegistry(), identify)
        reasons: list[str] = []
        relay.on_refused = reasons.append
        port = await relay.serve_tls(
            "127.0.0.1", 0, server_context(tmp_path), source_filter=lambda s: s != FLOODER
        )
        try:
            # when the refused source connects, TLS or not
            for _ in range(3):
                # then it is closed before any byte is read or sent (reset, maybe even before
                # the client saw its connect complete)
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except ConnectionError:
                    continue
                assert await _closed_by_server(reader)
                writer.close()
            try:
                await _tls(port, FLOODER)
                handshake = "completed"
            except (ConnectionError, OSError):
                handshake = "refused"
            assert handshake == "refused"
            # and counted, with its reason; another source is relayed as always
            assert relay.refused_sources == 4
            assert reasons == [REFUSED_SOURCE] * 4
            reader, writer = await _tls(port, OTHER)
            assert await round_trip(reader, writer) == b"ping"
            writer.close()
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_disconnect_closes_the_relayed_connection_behind_a_peer(tmp_path: Path) -> None:
    async def scenario() -> None:
        relay, port, echo = await _relay(tmp_path, RelayLimits())
        try:
            # given two relayed connections
            first = await _tls(port, FLOODER)
            second = await _tls(port, OTHER)
            for reader, writer in (first, second):
                assert await round_trip(reader, writer) == b"ping"
            [address, _] = list(relay.registry._peers)

            # when the server side disconnects the first (as grpc names it: unix:<address>)
            assert relay.registry.disconnect(f"unix:{address}")

            # then that client is closed and the other still served; a gone peer is False
            assert await _closed_by_server(first[0])
            assert await round_trip(*second) == b"ping"
            for _ in range(100):
                if address not in relay.registry._peers:
                    break
                await asyncio.sleep(0.05)
            assert relay.registry.disconnect(f"unix:{address}") is False
            for _, writer in (first, second):
                with contextlib.suppress(Exception):
                    writer.close()
        finally:
            await relay.close()
            echo.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())
