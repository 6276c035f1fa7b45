"""A relay that tells a grpcio server who is on the other end of each connection.

grpcio hides the accepted socket, so a TLS client certificate verified our way (the agent
API) never reaches a servicer. The relay accepts the real connection itself, learns what it
needs (the TLS handshake; `identify` may read SO_PEERCRED of a Unix connection too), then
connects onward to the grpcio server on a Unix socket in a private (0700) directory from a
socket bound to a fresh address in a private (0700) directory of its own. grpcio reports that
address as `context.peer()` (`unix:<path>`), and `PeerRegistry.lookup` maps it back to what
the relay learned. Nobody else can enter either directory: local users can neither reach the
inner socket nor bind (squat) the addresses the relay will use. (Abstract socket names would
be visible in /proc/net/unix and bindable by any local user.) The Workload API needs no relay:
it serves gRPC on the connections it accepts (agent.workload.grpcserver), with
`bind_unix_listener` and `peer_credentials` from here.

On the public TLS listener the relay also bounds what one source may hold: connections per
source address (counted from accept, before the TLS handshake) and an idle timeout. Given a
`source_filter`, a source it refuses (the agent API: one over its failed-attestation limit)
is closed at accept, before the ClientHello is read: the cheapest refusal there is. Given a
`server_name_filter`, it reads the server name from the ClientHello's bytes before any TLS
object exists (hallmark.clienthello) and answers a name the filter refuses with an
unrecognized_name alert: an anonymous handshake for a name nobody has then costs a peek and a
parse, not asyncio's TLS transport and an SSL object. Names it lets through, and ClientHellos
it cannot read, take the full handshake, whose SNI callback decides again. With
`RelayLimits.refused_name_delay`, the refusal is answered only after that delay (a tarpit:
the connection waits as a timer, counted against its source's connections; at most
MAX_HELD_REFUSALS at once, beyond which refusals are answered at once), so a client that
waits for each answer sends one refused handshake a delay per connection. For a name it
admits, `before_handshake` may name work the handshake waits for first (the agent API: its
tenant's credentials, built when a handshake first names the tenant), for half the
handshake's time at most.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import ssl
import stat
import struct
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hallmark import clienthello
from hallmark.errors import HallmarkError
from hallmark.relaylimits import RelayLimits, source_of

__all__ = [
    "MAX_SOCKET_PATH",
    "PeerCredentials",
    "PeerRegistry",
    "Relay",
    "RelayError",
    "RelayLimits",
    "bind_tcp_listeners",
    "bind_unix_listener",
    "peek",
    "peer_credentials",
    "private_socket_path",
    "source_of",
    "wait_before_handshake",
]

T = TypeVar("T")
_CHUNK = 256 * 1024
PEEK_AGAIN_SECONDS = 0.01  # a ClientHello split over TCP segments: look again this soon
_ACCEPT_BATCH = 64
MAX_HELD_REFUSALS = 4096  # refused handshakes waiting out their delay at once, all sources
ServerNameFilter = Callable[[str], bool]
SourceFilter = Callable[[str], bool]  # source → whether it may connect now
RefusalHook = Callable[[str], None]  # told why a connection was refused at the edge
# an admitted server name → what its handshake should wait for first (None: nothing)
HandshakeWait = Callable[[str], "concurrent.futures.Future[None] | None"]
# Why a connection was closed before relaying (the reasons `on_refused` is told).
REFUSED_CONNECTIONS_PER_SOURCE = "connections_per_source"
REFUSED_SOURCE = "source_refused"
REFUSED_SERVER_NAME = "unknown_server_name"


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


class RelayError(HallmarkError):
    """The relay cannot listen or relay safely; the message says what to change."""

    code = "relay_unsafe"


class PeerRegistry(Generic[T]):
    """Maps the relay's per-connection client addresses to what it learned of the peer."""

    def __init__(self) -> None:
        self._peers: dict[str, T] = {}
        self._closers: dict[str, Callable[[], None]] = {}

    def _register(self, address: str, info: T, close: Callable[[], None] | None = None) -> None:
        self._peers[address] = info
        if close is not None:
            self._closers[address] = close

    def _forget(self, address: str) -> None:
        self._peers.pop(address, None)
        self._closers.pop(address, None)

    def disconnect(self, grpc_peer: str) -> bool:
        """Close the relayed connection behind `context.peer()` (both ends, every stream on
        it); False when it is not (or no longer) relayed. Call it on the event loop."""
        _, _, address = grpc_peer.partition(":")
        close = self._closers.get(address)
        if close is None:
            return False
        close()
        return True

    def lookup(self, grpc_peer: str) -> T | None:
        """`context.peer()` of a relayed call → what the relay learned; None otherwise."""
        scheme, _, address = grpc_peer.partition(":")
        if scheme != "unix" or not address:
            return None
        return self._peers.get(address)

    def __len__(self) -> int:
        return len(self._peers)


# sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107
# Room left in a private directory's path for the relay's per-connection names.
_PEER_NAME_ROOM = 24


def _check_private_directory(directory: str) -> None:
    """Refuse a directory that is a link, not ours, or open to group or others."""
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise RelayError(f"{directory} is not a directory (a symlink?); remove it")
    if info.st_uid != os.geteuid():
        raise RelayError(
            f"{directory} belongs to uid {info.st_uid}, not this process (uid {os.geteuid()}); "
            "remove it or choose another directory"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise RelayError(f"{directory} is open to group or others; chmod 700 {directory}")


def private_socket_path(directory: str, name: str = "inner.sock") -> str:
    """A socket path in a directory only this user can enter (created 0700).

    When `directory` is too deep for a Unix socket path, a fresh private directory under the
    system temp dir is used instead (mkdtemp creates it 0700).
    """
    path = os.path.join(directory, name)
    if len(os.fsencode(os.path.abspath(path))) > MAX_SOCKET_PATH:
        return os.path.join(tempfile.mkdtemp(prefix="hallmark-"), name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
        os.chmod(directory, 0o700)
    _check_private_directory(directory)
    return path


def bind_unix_listener(path: str, mode: int) -> socket.socket:
    """A listening Unix socket at `path` with `mode`, never chmod-ing through a link.

    os.chmod(path) follows symlinks: had someone swapped the socket for a link to a file
    between bind and chmod, that file would get the socket's mode. So the socket's own inode
    is opened without following links (O_PATH|O_NOFOLLOW), checked to be a socket, and
    changed through /proc/self/fd (as glibc's lchmod does).
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise RelayError(
                    f"{path} was replaced while the socket was being created; make sure only "
                    "this user can write its directory"
                )
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class _Refused:
    """A refused ClientHello not answered yet: how many bytes were peeked, and whether it
    was TLS (which gets an unrecognized_name alert)."""

    peeked: int
    tls: bool


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def bind_tcp_listeners(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Non-blocking sockets listening on every address `host` has (as asyncio.start_server
    binds); with port 0, the later ones take the port the first was given. With
    `reuse_port`, peer processes may listen on the same port (SO_REUSEPORT: the kernel
    spreads new connections across them and stops sending to a listener that closes)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, found in dict.fromkeys(infos):
            address = found
            if listeners and port == 0:
                address = (found[0], listeners[0].getsockname()[1], *found[2:])
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


async def peek(conn: socket.socket) -> bytes:
    """The bytes waiting on a non-blocking socket once it is readable, left there for the
    TLS handshake to read (b"": the peer closed before sending anything)."""
    loop = asyncio.get_running_loop()
    while True:
        readable = loop.create_future()
        loop.add_reader(conn.fileno(), _wake, readable)
        try:
            await readable
        finally:
            loop.remove_reader(conn.fileno())
        try:
            return conn.recv(clienthello.MAX_PEEK, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue


async def wait_before_handshake(pending: concurrent.futures.Future[None], deadline: float) -> None:
    """Wait for `pending` (a handshake's tenant credentials being built, say), for half the
    time left before the handshake's `deadline` at most: the handshake keeps the other half,
    to be answered (an alert from the SNI callback, when the work did not end in time)
    rather than cut off. A connection that gives up does not cancel the work."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(loop.time() + (deadline - loop.time()) / 2):
            await asyncio.shield(asyncio.wrap_future(pending))


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: list[float]
) -> None:
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(_CHUNK):
            activity[0] = loop.time()
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
        self._accepting: set[asyncio.Task[None]] = set()
        self._listeners: list[socket.socket] = []
        self._accept_loops: set[asyncio.Task[None]] = set()
        self.sources: Counter[str] = Counter()
        self.refused = 0  # connections over the per-source limit, closed at accept
        self.refused_sources = 0  # connections of sources the source filter refused
        self.refused_names = 0  # handshakes answered unrecognized_name from the ClientHello
        self.on_refused: RefusalHook | None = None
        # Asked for every server name admitted from its ClientHello: the work its handshake
        # waits for before it starts (its tenant's credentials being built, say), for half
        # its handshake's time at most; the handshake then goes on whether it ended or not.
        self.before_handshake: HandshakeWait | None = None
        self._held: dict[socket.socket, asyncio.TimerHandle] = {}  # refusals waiting to answer
        self._counter = 0
        self._peer_dir, self._own_peer_dir = self._choose_peer_dir(inner_path)

    @staticmethod
    def _choose_peer_dir(inner_path: str) -> tuple[str, bool]:
        directory = os.path.dirname(os.path.abspath(inner_path))
        if len(os.fsencode(directory)) + _PEER_NAME_ROOM <= MAX_SOCKET_PATH:
            _check_private_directory(directory)
            return directory, False
        return tempfile.mkdtemp(prefix="hallmark-peers-"), True

    def _next_address(self) -> str:
        self._counter += 1
        return os.path.join(self._peer_dir, f"p{os.getpid():x}-{self._counter:x}")

    async def serve_unix(self, path: str, *, mode: int = 0o777) -> None:
        sock = bind_unix_listener(path, mode)
        server = await asyncio.start_unix_server(self._handle, sock=sock)
        self._servers.append(server)

    async def serve_tls(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        *,
        reuse_port: bool = False,
        limits: RelayLimits | None = None,
        server_name_filter: ServerNameFilter | None = None,
        source_filter: SourceFilter | None = None,
    ) -> int:
        """Listen on host:port; with `reuse_port`, peer processes may listen on it too.

        SO_REUSEPORT lets several processes of the same user bind one port; the kernel
        spreads new connections across them and stops sending to a listener that closes.
        Connections are counted per source address from accept on (`limits`). A source that
        `source_filter` refuses is closed at accept. A ClientHello whose server name
        `server_name_filter` refuses is answered before TLS starts.
        """
        limits = limits or RelayLimits()
        listeners = bind_tcp_listeners(host, port, reuse_port=reuse_port)
        for listener in listeners:
            self._listeners.append(listener)
            task = asyncio.get_running_loop().create_task(
                self._accept_tls(listener, context, limits, server_name_filter, source_filter)
            )
            self._accepting.add(task)
            self._accept_loops.add(task)
        return int(listeners[0].getsockname()[1])

    async def _accept_tls(
        self,
        listener: socket.socket,
        context: ssl.SSLContext,
        limits: RelayLimits,
        server_name_filter: ServerNameFilter | None,
        source_filter: SourceFilter | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        filters = {"server_name_filter": server_name_filter, "source_filter": source_filter}
        while True:
            try:
                conn, address = await loop.sock_accept(listener)
                self._accepted(conn, address, context, limits, **filters)
                # A flood fills the backlog: take what is queued without a wait each.
                for _ in range(_ACCEPT_BATCH):
                    conn, address = listener.accept()
                    conn.setblocking(False)
                    self._accepted(conn, address, context, limits, **filters)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                await asyncio.sleep(0.1)  # out of file descriptors, say: let some close
                continue

    def _accepted(
        self,
        conn: socket.socket,
        address: Any,
        context: ssl.SSLContext,
        limits: RelayLimits,
        *,
        server_name_filter: ServerNameFilter | None,
        source_filter: SourceFilter | None = None,
    ) -> None:
        source = source_of(str(address[0]))
        admitted_name: str | None = None
        if self.sources[source] >= limits.max_connections_per_source:
            self.refused += 1
            self._refused(conn, REFUSED_CONNECTIONS_PER_SOURCE)
            return
        if source_filter is not None and not source_filter(source):
            self.refused_sources += 1
            self._refused(conn, REFUSED_SOURCE)
            return
        if server_name_filter is not None:
            # The ClientHello often came with the connection: decided here, a refused name
            # costs no task and no TLS object.
            try:
                data = conn.recv(clienthello.MAX_PEEK, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                conn.close()
                return
            else:
                decision = self._decide(conn, data, server_name_filter, limits)
                if isinstance(decision, _Refused):
                    self._hold(conn, source, decision, limits.refused_name_delay)
                    return
                if decision is False:
                    conn.close()
                    return
                if decision is not None:
                    server_name_filter = None  # admitted: straight to the handshake
                    if isinstance(decision, str):
                        admitted_name = decision
        self.sources[source] += 1
        task = asyncio.get_running_loop().create_task(
            self._serve_tls_connection(
                conn, source, context, limits, server_name_filter, admitted_name=admitted_name
            )
        )
        self._accepting.add(task)
        task.add_done_callback(self._accepting.discard)

    async def _serve_tls_connection(
        self,
        conn: socket.socket,
        source: str,
        context: ssl.SSLContext,
        limits: RelayLimits,
        server_name_filter: ServerNameFilter | None,
        *,
        admitted_name: str | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.handshake_timeout
        try:
            if server_name_filter is not None:
                async with asyncio.timeout_at(deadline):
                    admitted = await self._admitted(conn, server_name_filter, limits)
                if isinstance(admitted, _Refused):
                    await asyncio.sleep(limits.refused_name_delay)  # counted as its source's
                    self._answer(conn, admitted)
                    conn.close()
                    return
                if not admitted:
                    conn.close()
                    return
                if isinstance(admitted, str):
                    admitted_name = admitted
            if admitted_name is not None and self.before_handshake is not None:
                await self._wait_before_handshake(admitted_name, deadline)
            reader = asyncio.StreamReader(limit=_CHUNK)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=context,
                ssl_handshake_timeout=max(deadline - loop.time(), 0.001),
            )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._handle(reader, writer, idle_timeout=limits.idle_timeout)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError):
            conn.close()
        except asyncio.CancelledError:
            conn.close()
        finally:
            self._release_source(source)

    async def _wait_before_handshake(self, name: str, deadline: float) -> None:
        """Wait for what `before_handshake` names for `name` (`wait_before_handshake`)."""
        assert self.before_handshake is not None
        pending = self.before_handshake(name)
        if pending is not None:
            await wait_before_handshake(pending, deadline)

    async def _admitted(
        self, conn: socket.socket, server_name_filter: ServerNameFilter, limits: RelayLimits
    ) -> bool | str | _Refused:
        """Wait for the ClientHello and peek at it: False (answered, to be closed) when its
        server name is refused or it is no TLS, or the refusal to answer after the delay;
        the admitted server name, or True when the ClientHello could not be read, to go on
        with the full handshake."""
        while True:
            data = await peek(conn)
            decision = self._decide(conn, data, server_name_filter, limits)
            if decision is not None:
                return decision
            await asyncio.sleep(PEEK_AGAIN_SECONDS)  # split over TCP segments: the rest

    def _refused(self, conn: socket.socket, reason: str) -> None:
        """Close a connection refused at accept (a reset: no TLS, no lingering state)."""
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        if self.on_refused is not None:
            self.on_refused(reason)

    def _decide(
        self,
        conn: socket.socket,
        data: bytes,
        server_name_filter: ServerNameFilter,
        limits: RelayLimits,
    ) -> bool | str | _Refused | None:
        """What the peeked bytes say: the server name admitted (or True for a ClientHello
        that could not be read) go on, False refused (answered), None wait; a refusal to
        answer after `limits.refused_name_delay` (`_Refused`, not answered yet)."""
        if not data:
            return False  # closed before it said anything
        name = clienthello.server_name(data)
        if name == clienthello.NEED_MORE:
            return None
        if name == clienthello.UNKNOWN:
            return True
        refuse = name in (clienthello.NOT_TLS, clienthello.NOT_A_NAME)
        if not refuse and server_name_filter(name):
            return name
        refused = _Refused(len(data), tls=name != clienthello.NOT_TLS)
        if refused.tls and limits.refused_name_delay > 0 and len(self._held) < MAX_HELD_REFUSALS:
            return refused
        self._answer(conn, refused)
        return False

    def _answer(self, conn: socket.socket, refused: _Refused) -> None:
        """Answer a refused ClientHello as a TLS server does (bytes that are no TLS get no
        answer), after reading what was peeked: closing with unread bytes would reset the
        connection before the client reads the answer."""
        with contextlib.suppress(OSError):
            conn.recv(refused.peeked)
            if refused.tls:
                self.refused_names += 1
                conn.send(clienthello.UNRECOGNIZED_NAME_ALERT)
        if refused.tls and self.on_refused is not None:
            self.on_refused(REFUSED_SERVER_NAME)

    def _hold(self, conn: socket.socket, source: str, refused: _Refused, delay: float) -> None:
        """Answer `refused` after `delay`: a timer, and a connection of its source meanwhile."""
        self.sources[source] += 1

        def answer() -> None:
            self._held.pop(conn, None)
            self._answer(conn, refused)
            conn.close()
            self._release_source(source)

        self._held[conn] = asyncio.get_running_loop().call_later(delay, answer)

    def _release_source(self, source: str) -> None:
        """One connection of `source` fewer (counted from accept, or from a held refusal)."""
        self.sources[source] -= 1
        if self.sources[source] <= 0:
            del self.sources[source]

    async def stop_accepting(self) -> None:
        """Close the listeners; connections already relayed go on (a graceful drain's start).

        With SO_REUSEPORT the kernel sends new connections to the peer processes still
        listening; with none left, a new connection is refused.
        """
        for task in list(self._accept_loops):
            task.cancel()
        for task in list(self._accept_loops):
            with contextlib.suppress(BaseException):
                await task
        self._accept_loops.clear()
        for listener in self._listeners:
            listener.close()
        for server in self._servers:
            server.close()

    async def close(self) -> None:
        for conn, timer in list(self._held.items()):
            timer.cancel()
            conn.close()
        self._held.clear()
        for task in list(self._accepting):
            task.cancel()
        for listener in self._listeners:
            listener.close()
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for task in list(self._accepting):
            with contextlib.suppress(BaseException):
                await task
        self._servers.clear()
        self._listeners.clear()
        if self._own_peer_dir:
            shutil.rmtree(self._peer_dir, ignore_errors=True)

    async def _handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_timeout: float | None = None,
    ) -> None:
        address: str | None = None
        inner_writer: asyncio.StreamWriter | None = None
        try:
            info = await self._identify(writer)
            if info is None:
                return
            address = self._next_address()
            inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)  # a leftover of a crashed process: the directory is ours
            inner.bind(address)

            def close() -> None:
                for w in (inner_writer, writer):
                    if w is not None:
                        with contextlib.suppress(Exception):
                            w.close()

            self.registry._register(address, info, close)
            inner.setblocking(False)
            await asyncio.get_running_loop().sock_connect(inner, self.inner_path)
            inner_reader, inner_writer = await asyncio.open_unix_connection(sock=inner)
            await self._relay(reader, writer, inner_reader, inner_writer, idle_timeout)
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # The relay is shutting down; asyncio's stream server would log a cancelled
            # handler as an error, and there is nothing left to report.
            pass
        finally:
            if address is not None:
                self.registry._forget(address)
                with contextlib.suppress(OSError):
                    os.unlink(address)
            for w in (inner_writer, writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    @staticmethod
    async def _relay(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        inner_reader: asyncio.StreamReader,
        inner_writer: asyncio.StreamWriter,
        idle_timeout: float | None,
    ) -> None:
        """Pipe both ways until both ends finish, or nothing moved for `idle_timeout`."""
        loop = asyncio.get_running_loop()
        activity = [loop.time()]
        pipes = asyncio.gather(
            _pipe(reader, inner_writer, activity), _pipe(inner_reader, writer, activity)
        )
        if idle_timeout is None:
            await pipes
            return
        try:
            while True:
                left = activity[0] + idle_timeout - loop.time()
                if left <= 0:
                    return  # idle: the finally closes both ends
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pipes), left)
                    return
        finally:
            if not pipes.done():
                pipes.cancel()
                with contextlib.suppress(BaseException):
                    await pipes
