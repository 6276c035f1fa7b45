"""The Workload API's splicing relay, in front of a plain echo server on a real Unix socket.

What the gRPC tests do not push: more bytes than any socket buffer holds (back-pressure both
ways), a caller that half-closes and still reads the rest of the answer, and the relay's
per-connection address registered while the connection lives and forgotten after it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from agent.workload.splice import WorkloadRelay
from hallmark.relay import PeerRegistry, peer_credentials

PAYLOAD = os.urandom(6 * 1024 * 1024)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write(b"<eof seen>")
    await writer.drain()
    writer.close()


async def _identify(transport: object) -> tuple[int, int]:
    credentials = peer_credentials(transport.get_extra_info("socket"))  # type: ignore[attr-defined]
    return (credentials.pid, credentials.uid)


async def _session(tmp_path: Path) -> tuple[bytes, int, int, tuple[int, int] | None]:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    inner = str(private / "inner.sock")
    registry: PeerRegistry[tuple[int, int]] = PeerRegistry()
    seen: list[tuple[tuple[int, int] | None, int]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # what the inner server's peer address maps to, while the connection lives
        seen.append((registry.lookup(f"unix:{writer.get_extra_info('peername')}"), len(registry)))
        await _echo(reader, writer)

    inner_server = await asyncio.start_unix_server(echo, path=inner)
    relay: WorkloadRelay[tuple[int, int]] = WorkloadRelay(inner, registry, _identify)
    public = str(tmp_path / "public.sock")
    await relay.serve_unix(public)
    loop = asyncio.get_running_loop()
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        await loop.sock_connect(client, public)

        async def send() -> None:
            await loop.sock_sendall(client, PAYLOAD)
            client.shutdown(socket.SHUT_WR)  # half-close: the answer must still come back

        received = bytearray()
        sender = loop.create_task(send())
        while data := await loop.sock_recv(client, 1024 * 1024):
            received.extend(data)
        await sender
        while_open, during = seen[0]
        client.close()
        for _ in range(200):  # the relay forgets the address once both sides closed
            if not len(registry):
                break
            await asyncio.sleep(0.01)
        return bytes(received), during, len(registry), while_open
    finally:
        await relay.close()
        inner_server.close()
        await inner_server.wait_closed()


def test_the_relay_carries_more_than_a_socket_buffer_both_ways_and_passes_half_closes(
    tmp_path: Path,
) -> None:
    received, during, after, peer = asyncio.run(_session(tmp_path))

    assert received == PAYLOAD + b"<eof seen>"
    assert peer == (os.getpid(), os.geteuid())  # the echo server's peer maps to the caller
    assert during == 1
    assert after == 0
