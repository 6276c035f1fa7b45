"""A relay that tells a grpcio server who is on the other end of each connection.

grpcio hides the accepted socket, so neither the caller's kernel credentials (Workload API)
nor a TLS client certificate verified our way (agent API) reach a servicer. The relay accepts
the real connection itself, learns what it needs (SO_PEERCRED, or the TLS handshake), then
connects onward to the grpcio server on a Unix socket in a private (0700) directory from a
socket bound to a fresh abstract address. grpcio reports that address as `context.peer()`
(`unix-abstract:<name>`), and `PeerRegistry.lookup` maps it back to what the relay learned.
Workloads cannot reach the inner socket, so they cannot forge an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class PeerCredentials:
    """The calling process as the kernel reports it for a Unix socket (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


class PeerRegistry(Generic[T]):
    """Maps the relay's per-connection abstract addresses to what it learned of the peer."""

    def __init__(self) -> None:
        self._prefix = f"hallmark-relay-{os.getpid()}-{secrets.token_hex(8)}-"
        self._peers: dict[str, T] = {}
        self._counter = 0

    def _register(self, info: T) -> str:
        self._counter += 1
        name = f"{self._prefix}{self._counter}"
        self._peers[name] = info
        return name

    def _forget(self, name: str) -> None:
        self._peers.pop(name, None)

    def lookup(self, grpc_peer: str) -> T | None:
        """`context.peer()` of a relayed call → what the relay learned; None otherwise."""
        scheme, _, name = grpc_peer.partition(":")
        if scheme != "unix-abstract":
            return None
        return self._peers.get(name.lstrip("\x00").lstrip("@"))

    def __len__(self) -> int:
        return len(self._peers)


# sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107


def private_socket_path(directory: str, name: str = "inner.sock") -> str:
    """A socket path in a directory only this user can enter (created 0700).

    When `directory` is too deep for a Unix socket path, a fresh private directory under the
    system temp dir is used instead (mkdtemp creates it 0700).
    """
    path = os.path.join(directory, name)
    if len(os.fsencode(os.path.abspath(path))) > MAX_SOCKET_PATH:
        return os.path.join(tempfile.mkdtemp(prefix="hallmark-"), name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    return path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


class Relay(Generic[T]):
    """Accept connections, identify each peer with `identify`, relay it to `inner_path`."""

    def __init__(
        self,
        inner_path: str,
        registry: PeerRegistry[T],
        identify: Callable[[asyncio.StreamWriter], Awaitable[T | None]],
    ) -> None:
        self.inner_path = inner_path
        self.registry = registry
        self._identify = identify
        self._servers: list[asyncio.AbstractServer] = []

    async def serve_unix(self, path: str, *, mode: int = 0o777) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = await asyncio.start_unix_server(self._handle, path=path)
        os.chmod(path, mode)
        self._servers.append(server)

    async def serve_tls(
        self, host: str, port: int, context: ssl.SSLContext, *, reuse_port: bool = False
    ) -> int:
        """Listen on host:port; with `reuse_port`, peer processes may listen on it too.

        SO_REUSEPORT lets several processes of the same user bind one port; the kernel
        spreads new connections across them and stops sending to a listener that closes.
        """
        server = await asyncio.start_server(
            self._handle,
            host=host,
            port=port,
            ssl=context,
            ssl_handshake_timeout=10,
            reuse_port=reuse_port or None,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name: str | None = None
        inner_writer: asyncio.StreamWriter | None = None
        try:
            info = await self._identify(writer)
            if info is None:
                return
            name = self.registry._register(info)
            inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            inner.bind("\0" + name)
            inner.setblocking(False)
            await asyncio.get_running_loop().sock_connect(inner, self.inner_path)
            inner_reader, inner_writer = await asyncio.open_unix_connection(sock=inner)
            await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # The relay is shutting down; asyncio's stream server would log a cancelled
            # handler as an error, and there is nothing left to report.
            pass
        finally:
            if name is not None:
                self.registry._forget(name)
            for w in (inner_writer, writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
