"""A legitimate agent's SyncAuthorizedEntries latency, alone and during each abuse flood.

Prints, from one run on one machine, p50/p99 of SyncAuthorizedEntries on the agent's open
mTLS connection (and of connect + sync on a fresh connection, sampled every tenth call):
  alone                 nothing else happening
  SNI flood             TLS handshakes naming trust domains nobody has, each name new
  idle-connection flood TCP connections to the agent API that never send a byte
  attestation flood     AttestAgent with join tokens nobody issued, from one address
  signup flood          POST /api/v1/signup from one address, past its rate limit: 1,000 a
                        second by default (`--signup-rate`) on 4 keep-alive connections
and the ratio p99(flood) / p99(alone) against the goal (at most 2x). Every flood runs in
client processes of its own, bounded by a count and by `--seconds`, against 127.0.0.1 only,
and stops itself; beside each row are what the flood got (its outcomes) and the cores its
client processes used (they share the machine with the plane). The floods come from an
address of their own (`--flood-source`, 127.0.0.2 by default), as an attacker's would: the
limits per source (connections, failed attestations, signups) then fall on the flood, not
on the legitimate agent's own address (`--flood-source 127.0.0.1` shares it).

Beside the latencies, each flood row says what one flood request cost the plane: the CPU
time of the plane's processes (agent API, web, database, ...; read from /proc) during the
flood, less what the legitimate agent's syncs cost alone, divided by the requests the flood
sent. That figure is the flood's cost per request whatever the machine's load; the latency
ratio also depends on how fast the flood sends. By default each flood client sends as fast
as it gets answers (closed loop: a cheaper refusal lets it send more on the same cores);
`--rate N` makes it send N a second (open loop). The signup flood is open loop at
`--signup-rate` (1,000 a second; 0 for closed loop), sent by one thread on raw keep-alive
sockets so that its own CPU (about 0.1 core at 1,000 a second) is not what slows the agent.
`--flood-cpus` / `--plane-cpus` put the flood clients and the plane (with the legitimate
agent) on separate cores (taskset), to tell contention for the cores from the cost of the
requests; `--flood-nice` lowers the flood clients' priority instead.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
import re
import secrets
import selectors
import socket
import ssl
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

T = TypeVar("T")
GOAL = 2.0
FRESH_EVERY = 10  # every tenth sample also times connect + sync on a fresh connection
MAX_FLOOD_ACTIONS = 200_000  # per client process: the count bound beside the time bound
PASSWORD = "correct horse battery staple"  # noqa: S105 - the benchmark tenant's, thrown away
STARTED_TIMEOUT = 120.0
# The signup flood's default rate: over twice what its former client (four threads of
# `requests`, closed loop, on the same cores) reached, 300-415 a second.
SIGNUP_RATE = 1000.0


# -- the legitimate agent -----------------------------------------------------------------------
@dataclass
class Agent:
    """An attested agent: its key and SVID chain, and how to reach its trust domain."""

    grpc_address: str
    trust_domain: str
    roots_pem: bytes
    key: ec.EllipticCurvePrivateKey
    chain_pem: bytes = b""

    def channel(self) -> grpc.Channel:
        """A connection of its own (mTLS once attested), as one agent holds."""
        key_pem = None
        if self.chain_pem:
            key_pem = self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.roots_pem,
            private_key=key_pem,
            certificate_chain=self.chain_pem or None,
        )
        return grpc.secure_channel(
            self.grpc_address,
            credentials,
            options=[
                ("grpc.ssl_target_name_override", self.trust_domain),
                ("grpc.default_authority", self.trust_domain),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-hallmark-trust-domain", self.trust_domain),)

    def sync(self, channel: grpc.Channel) -> int:
        from hallmark.protos import agent_pb2, agent_pb2_grpc

        answer = agent_pb2_grpc.AgentAPIStub(channel).SyncAuthorizedEntries(
            agent_pb2.SyncAuthorizedEntriesRequest(), metadata=self.metadata, timeout=30
        )
        return len(answer.entries)


def _signup(url: str, label: str) -> dict[str, Any]:
    td = f"{label}-{secrets.token_hex(3)}.test"
    answer = requests.post(
        f"{url}/api/v1/signup",
        timeout=60,
        json={"name": label, "trust_domain": td, "email": f"ops@{td}", "password": PASSWORD},
    )
    answer.raise_for_status()
    return dict(answer.json())


def attested_agent(url: str, grpc_address: str, entries: int) -> Agent:
    """Sign up a tenant, register `entries` workloads under a node alias, attest an agent."""
    from cryptography import x509

    from attestors.node import join_token
    from hallmark.protos import agent_pb2, agent_pb2_grpc
    from hallmark.x509svid import make_csr

    tenant = _signup(url, "abuse-bench")
    td, headers = tenant["trust_domain"], {"Authorization": f"Bearer {tenant['token']}"}
    alias = f"spiffe://{td}/node/bench"
    for i in range(entries):
        requests.post(
            f"{url}/api/v1/entries",
            headers=headers,
            timeout=30,
            json={
                "spiffe_id": f"spiffe://{td}/w/{i}",
                "parent_id": alias,
                "selectors": [f"unix:uid:{1000 + i}"],
            },
        ).raise_for_status()
    token = requests.post(
        f"{url}/api/v1/join-tokens",
        headers=headers,
        timeout=30,
        json={"ttl": 600, "spiffe_id": alias},
    ).json()["token"]
    roots = requests.get(
        f"{url}/api/v1/bundle", headers=headers, params={"format": "pem"}, timeout=30
    ).content
    agent = Agent(grpc_address, td, roots, ec.generate_private_key(ec.SECP256R1()))
    request = agent_pb2.AttestAgentRequest(
        trust_domain=td,
        attestation_type="join_token",
        attestation_data=join_token.attestation_data(token),
        csr=make_csr(agent.key),
    )
    deadline = time.monotonic() + STARTED_TIMEOUT
    while True:  # the plane builds a new tenant's TLS credentials in the background
        channel = agent.channel()
        try:
            # the attestation is a stream: a join token's answer is its first message
            answer = next(
                iter(
                    agent_pb2_grpc.AgentAPIStub(channel).AttestAgent(
                        iter([request]), metadata=agent.metadata, timeout=30
                    )
                )
            )
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            channel.close()
    agent.chain_pem = b"".join(
        x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
        for d in answer.svid_chain
    )
    return agent


@dataclass
class Samples:
    """Latencies (seconds) of one phase: steady-connection syncs and fresh connect + sync."""

    steady: list[float] = field(default_factory=list)
    fresh: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def measure(agent: Agent, channel: grpc.Channel, calls: int, seconds: float) -> Samples:
    samples = Samples()
    deadline = time.monotonic() + seconds
    for index in range(calls):
        if time.monotonic() >= deadline:
            break
        started = time.perf_counter()
        try:
            agent.sync(channel)
            samples.steady.append(time.perf_counter() - started)
        except grpc.RpcError as error:
            samples.errors[str(error.code())] += 1
        if index % FRESH_EVERY == 0:
            started = time.perf_counter()
            fresh = agent.channel()
            try:
                agent.sync(fresh)
                samples.fresh.append(time.perf_counter() - started)
            except grpc.RpcError as error:
                samples.errors[f"fresh {error.code()}"] += 1
            finally:
                fresh.close()
    return samples


def p50_p99(samples: list[float]) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# -- the plane's CPU, per part ---------------------------------------------------------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def _role(cmdline: str) -> str:
    for needle, role in (
        ("agent-api", "agent API"),
        ("gunicorn", "web"),
        ("postgres", "database"),
        ("redis", "redis"),
        ("bundle-endpoint", "bundle endpoint"),
        ("celery", "celery"),
    ):
        if needle in cmdline:
            return role
    return "other"


@dataclass(frozen=True)
class Plane:
    """The `hallmark up` process, and its data dir (daemonized servers mention it)."""

    pid: int
    data_dir: str


def plane_cpu(plane: Plane) -> Counter[str]:
    """CPU clock ticks used so far by the plane's processes, per part: the descendants of
    `hallmark up` and of the embedded servers started with its data dir in their command line
    (PostgreSQL's backends are the postmaster's children: their command lines name no data
    dir, and a backend's CPU would otherwise show only when it exits, in its postmaster's
    children's time, all of its life at once)."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            pid = int(entry.name)
            parents[pid] = int(stat.rpartition(")")[2].split()[1])
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            cmdlines[pid] = raw.replace(b"\0", b" ").decode(errors="replace")
    roots = {plane.pid} | {pid for pid, cmd in cmdlines.items() if plane.data_dir in cmd}
    used: Counter[str] = Counter()
    for pid in parents:
        ancestor, hops = pid, 0
        while ancestor not in roots and ancestor not in (0, 1) and hops < 32:
            ancestor, hops = parents.get(ancestor, 0), hops + 1
        if ancestor not in roots:
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            # utime, stime of the process and of its waited-for children
            used[_role(cmdlines.get(pid, ""))] += sum(int(f) for f in fields[11:15])
    return used


def pin_flood_client(cpus: set[int] | None, nice: int) -> None:
    """Run this flood client on `cpus` only (taskset), at `nice` (the plane keeps its own)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    if nice:
        os.nice(nice)


# -- floods, each in client processes of its own ------------------------------------------------
@dataclass(frozen=True)
class Flood:
    """What one flood client process does until `seconds` pass or `stop` is set."""

    kind: str  # sni | idle | attest | signup
    url: str
    grpc_address: str
    trust_domain: str
    roots_pem: bytes
    connections: int = 0  # idle: connections held at once; signup: keep-alive connections
    cpus: frozenset[int] = frozenset()  # taskset of the flood client (empty: any core)
    nice: int = 0
    rate: float = 0.0  # actions a second of this client (0: as fast as it gets answers)
    source: str = "127.0.0.2"  # the address the flood connects from


class Pacer:
    """Spaces actions `1 / rate` apart (0: no spacing), across threads: an open-loop flood
    sends at its rate however fast the server answers, so cheaper refusals do not simply buy
    the attacker more requests on the same cores."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            at = max(self._next, now)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


def _flood_child(flood: Flood, seconds: float, started: Any, stop: Any, results: Any) -> None:
    pin_flood_client(set(flood.cpus), flood.nice)
    cpu = time.process_time()
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    try:
        run = {"sni": _sni, "idle": _idle, "attest": _attest, "signup": _signup_flood}[flood.kind]
        run(flood, lambda: stop.is_set() or time.monotonic() >= deadline, started, outcomes)
    except Exception as error:  # noqa: BLE001 - reported as an outcome, the run goes on
        outcomes[f"flood client error: {type(error).__name__}: {error}"] += 1
    finally:
        started.set()
        results.put((dict(outcomes), time.process_time() - cpu))


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _sni(flood: Flood, done: Callable[[], bool], started: Any, outcomes: Counter[str]) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    host, port = _host_port(flood.grpc_address)
    pace = Pacer(flood.rate)
    started.set()
    for _ in range(MAX_FLOOD_ACTIONS):
        pace.wait()
        if done():
            return
        name = f"nx-{secrets.token_hex(6)}.flood.test"
        try:
            with (
                socket.create_connection(
                    (host, port), timeout=10, source_address=(flood.source, 0)
                ) as raw,
                context.wrap_socket(raw, server_hostname=name),
            ):
                outcomes["accepted (!)"] += 1
        except (ssl.SSLError, ConnectionError):
            outcomes["refused"] += 1
        except OSError as error:
            outcomes[type(error).__name__] += 1


def _idle(flood: Flood, done: Callable[[], bool], started: Any, outcomes: Counter[str]) -> None:
    """Hold `connections` TCP connections that send nothing; reopen those the server drops."""
    host, port = _host_port(flood.grpc_address)
    selector = selectors.DefaultSelector()
    held: set[socket.socket] = set()

    def open_one() -> None:
        try:
            sock = socket.create_connection(
                (host, port), timeout=5, source_address=(flood.source, 0)
            )
        except OSError as error:
            outcomes[f"connect {type(error).__name__}"] += 1
            return
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        held.add(sock)
        outcomes["opened"] += 1

    try:
        for _ in range(flood.connections):
            open_one()
        started.set()
        while not done() and outcomes["opened"] < MAX_FLOOD_ACTIONS:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if sock.recv(4096):
                        continue  # the server said something (an alert); still open
                selector.unregister(sock)
                held.discard(sock)
                sock.close()
                outcomes["dropped by the server"] += 1
            if len(held) < flood.connections:
                # a server that drops connections at once must not turn this into a
                # connect loop: reopen at most every quarter second
                time.sleep(0.25)
            while len(held) < flood.connections and not done():
                open_one()
        outcomes["held at the end"] = len(held)
    finally:
        for sock in held:
            sock.close()
        selector.close()


def _attest(flood: Flood, done: Callable[[], bool], started: Any, outcomes: Counter[str]) -> None:
    from attestors.node import join_token
    from hallmark.protos import agent_pb2, agent_pb2_grpc
    from hallmark.x509svid import make_csr

    # gRPC cannot choose the address a channel connects from: the channel talks to a Unix
    # socket of this process, which forwards to the agent API from `flood.source`.
    forwarder = SourceForwarder(flood.grpc_address, flood.source)
    stranger = Agent(
        forwarder.target,
        flood.trust_domain,
        flood.roots_pem,
        ec.generate_private_key(ec.SECP256R1()),
    )
    channel = stranger.channel()
    stub = agent_pb2_grpc.AgentAPIStub(channel)
    csr = make_csr(stranger.key)
    pace = Pacer(flood.rate)
    started.set()
    try:
        for _ in range(MAX_FLOOD_ACTIONS):
            pace.wait()
            if done():
                return
            request = agent_pb2.AttestAgentRequest(
                trust_domain=flood.trust_domain,
                attestation_type="join_token",
                attestation_data=join_token.attestation_data(secrets.token_hex(16)),
                csr=csr,
            )
            try:
                for _answer in stub.AttestAgent(
                    iter([request]), metadata=stranger.metadata, timeout=30
                ):
                    break
                outcomes["attested (!)"] += 1
            except grpc.RpcError as error:
                outcomes[(error.details() or str(error.code())).split(":", 1)[0]] += 1
    finally:
        channel.close()
        forwarder.close()


class SourceForwarder:
    """A Unix socket whose connections are forwarded to `address` from `source` (a thread)."""

    def __init__(self, address: str, source: str) -> None:
        self._remote, self._source = _host_port(address), source
        self._dir = tempfile.mkdtemp(prefix="hallmark-abuse-fwd-")
        path = os.path.join(self._dir, "fwd.sock")
        self.target = f"unix:{path}"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(64)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                inner, _ = self._listener.accept()
            except OSError:
                return
            try:
                outer = socket.create_connection(
                    self._remote, timeout=10, source_address=(self._source, 0)
                )
            except OSError:
                inner.close()
                continue
            threading.Thread(target=self._pipe, args=(inner, outer), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        pair = {a: b, b: a}
        selector = selectors.DefaultSelector()
        for sock in pair:
            sock.setblocking(True)
            selector.register(sock, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in selector.select(timeout=60):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    data = ready.recv(65536)
                    if not data:
                        return
                    pair[ready].sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            a.close()
            b.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self._dir, "fwd.sock"))
            os.rmdir(self._dir)


def _signup_flood(
    flood: Flood, done: Callable[[], bool], started: Any, outcomes: Counter[str]
) -> None:
    SignupFlooder(flood, outcomes).run(done, started)


class SignupFlooder:
    """`flood.connections` keep-alive HTTP/1.1 connections from `flood.source`, each sending
    its next signup as soon as its last is answered (or, with a rate, when the flood's next
    turn comes): one thread, raw sockets, a request built from a template, so the client's
    own CPU per request stays small (an attacker's would be on another machine)."""

    def __init__(self, flood: Flood, outcomes: Counter[str]) -> None:
        self.flood, self.outcomes = flood, outcomes
        self.host, self.port = _host_port(urlsplit(flood.url).netloc)
        self.head = (
            f"POST /api/v1/signup HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        self.interval = 1.0 / flood.rate if flood.rate > 0 else 0.0
        self.selector = selectors.DefaultSelector()
        self.pending: dict[socket.socket, bytearray] = {}  # sent, waiting for the answer
        self.ready: list[socket.socket] = []  # answered, may send the next
        self.sent = 0
        self.next_at = time.monotonic()

    def run(self, done: Callable[[], bool], started: Any) -> None:
        for _ in range(self.flood.connections):
            self.open_one()
        started.set()
        self.next_at = time.monotonic()
        try:
            while not done() and self.sent < MAX_FLOOD_ACTIONS:
                while len(self.ready) + len(self.pending) < self.flood.connections:
                    if done() or not self.open_one():
                        break
                self.send_due()
                wait = 0.5
                if self.ready and self.interval:
                    wait = max(0.0, self.next_at - time.monotonic())
                for key, _ in self.selector.select(timeout=wait):
                    assert isinstance(key.fileobj, socket.socket)
                    self.read(key.fileobj)
        finally:
            for sock in [*self.ready, *self.pending]:
                sock.close()
            self.selector.close()

    def request(self) -> bytes:
        td = f"flood-{secrets.token_hex(6)}.test"
        body = f'{{"name":"{td}","trust_domain":"{td}","email":"o@{td}","password":"{PASSWORD}"}}'
        return self.head.format(length=len(body)).encode() + body.encode()

    def open_one(self) -> bool:
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=10, source_address=(self.flood.source, 0)
            )
        except OSError as error:
            self.outcomes[f"connect {type(error).__name__}"] += 1
            time.sleep(0.05)  # no connect loop against a refusing server
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.ready.append(sock)
        return True

    def send_due(self) -> None:
        """Send on every answered connection whose turn has come."""
        now = time.monotonic()
        while self.ready and now >= self.next_at and self.sent < MAX_FLOOD_ACTIONS:
            sock = self.ready.pop()
            try:
                sock.sendall(self.request())  # a few hundred bytes: the socket takes them
            except OSError:
                self.outcomes["send failed"] += 1
                sock.close()
                continue
            self.sent += 1
            self.pending[sock] = bytearray()
            self.selector.register(sock, selectors.EVENT_READ)
            if self.interval:
                self.next_at = max(self.next_at + self.interval, now - 1.0)  # no burst later

    def read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data:
            buffer = self.pending[sock]
            buffer += data
            answer = _http_answer(buffer)
            if answer is None:
                return
            outcome, keep = answer
            self.outcomes[outcome] += 1
        else:
            self.outcomes["closed by the server"] += 1
            keep = False
        self.selector.unregister(sock)
        del self.pending[sock]
        if keep:
            self.ready.append(sock)
        else:
            sock.close()


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)")
_CODE = re.compile(rb'"code": *"([a-z_]+)"')


def _http_answer(buffer: bytearray) -> tuple[str, bool] | None:
    """`(status and code, keep the connection)` once `buffer` holds a whole answer."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    length = _CONTENT_LENGTH.search(head)
    if length:
        stop = end + 4 + int(length[1])
    elif b"transfer-encoding: chunked" in head:
        last = buffer.find(b"\r\n0\r\n\r\n", end)  # JSON holds no CRLF
        if last < 0:
            return None
        stop = last + 7
    else:
        return None  # the body ends when the server closes
    if len(buffer) < stop:
        return None
    code = _CODE.search(buffer, end)
    outcome = f"{int(head[9:12])} {code[1].decode() if code else ''}".strip()
    return outcome, b"connection: close" not in head


@dataclass
class FloodResult:
    outcomes: Counter[str]
    client_cores: float

    @property
    def actions(self) -> int:
        """Handshakes, connections, attestations or signups the flood sent."""
        tallies = ("held at the end", "a flood client did not answer")
        return sum(
            n for k, n in self.outcomes.items() if k not in tallies and "client error" not in k
        )


@dataclass
class PlaneCpu:
    """CPU ticks each part of the plane used during a phase, and the phase's length."""

    ticks: Counter[str]
    seconds: float

    @property
    def used(self) -> dict[str, float]:
        """CPU seconds per part, most first."""
        return {k: v / _TICKS for k, v in self.ticks.most_common()}

    @classmethod
    def during(cls, plane: Plane, work: Callable[[], T]) -> tuple[T, PlaneCpu]:
        before, began = plane_cpu(plane), time.monotonic()
        answer = work()
        after = plane_cpu(plane)
        after.subtract(before)
        return answer, cls(+after, time.monotonic() - began)


def during(floods: list[Flood], seconds: float, work: Callable[[], Samples], plane: Plane) -> Any:
    """Start the flood processes, wait until each is flooding, run `work`, stop them."""
    context = multiprocessing.get_context("spawn")  # no inherited gRPC state
    stop = context.Event()
    results: Any = context.Queue()
    started = [context.Event() for _ in floods]
    processes = [
        context.Process(target=_flood_child, args=(f, seconds + 30, s, stop, results), daemon=True)
        for f, s in zip(floods, started, strict=True)
    ]
    began, plane_before = time.monotonic(), plane_cpu(plane)
    for process in processes:
        process.start()
    try:
        for event in started:
            event.wait(timeout=STARTED_TIMEOUT)
        time.sleep(0.5)  # let it build up
        samples = work()
    finally:
        stop.set()
    outcomes: Counter[str] = Counter()
    cpu = 0.0
    for _ in processes:
        try:
            got, spent = results.get(timeout=60)
        except queue.Empty:
            outcomes["a flood client did not answer"] += 1
            continue
        outcomes.update(got)
        cpu += spent
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    plane_used = plane_cpu(plane)
    plane_used.subtract(plane_before)
    elapsed = max(time.monotonic() - began, 1e-9)
    return samples, FloodResult(outcomes, cpu / elapsed), PlaneCpu(+plane_used, elapsed)


# -- the run ---------------------------------------------------------------------------------------
def main() -> None:
    from benchmarks.workload_api import start_control_plane  # same start-up, one place

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--calls", type=int, default=5000, help="most syncs in a phase")
    parser.add_argument("--entries", type=int, default=10, help="entries the agent syncs")
    parser.add_argument("--sni-processes", type=int, default=2)
    parser.add_argument("--idle-connections", type=int, default=500)
    parser.add_argument("--attest-processes", type=int, default=2)
    parser.add_argument(
        "--signup-connections",
        type=int,
        default=4,
        help="keep-alive connections of the signup flood, each sending its next signup as "
        "soon as its last is answered (default 4)",
    )
    parser.add_argument(
        "--flood-cpus",
        default="",
        help="cores the flood clients run on (taskset list, e.g. 1); default: any",
    )
    parser.add_argument(
        "--plane-cpus",
        default="",
        help="cores the plane and the legitimate agent run on (e.g. 0); default: any",
    )
    parser.add_argument("--flood-nice", type=int, default=0, help="nice of the flood clients")
    parser.add_argument(
        "--flood-source",
        default="127.0.0.2",
        help="the address the floods connect from (default 127.0.0.2; the legitimate agent "
        "is 127.0.0.1)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests a second of each SNI and attestation flood process (an open-loop "
        "flood); default 0: each sends as fast as it gets answers",
    )
    parser.add_argument(
        "--signup-rate",
        type=float,
        default=SIGNUP_RATE,
        help=f"signups a second the signup flood sends (default {SIGNUP_RATE:.0f}, open loop); "
        "0: each connection sends its next as soon as its last is answered",
    )
    parser.add_argument(
        "--floods",
        default="sni,idle,attest,signup",
        help="the floods to run, comma-separated, of sni, idle, attest, signup (default: all)",
    )
    parser.add_argument(
        "--signup-limit",
        default="10/3600",
        help="HALLMARK_SIGNUP_RATE_LIMIT of the plane (default: the production default)",
    )
    args = parser.parse_args()
    os.environ["HALLMARK_SIGNUP_RATE_LIMIT"] = args.signup_limit
    flood_cpus, plane_cpus = _cpus(args.flood_cpus), _cpus(args.plane_cpus)
    if plane_cpus:
        os.sched_setaffinity(0, plane_cpus)  # the plane's processes inherit it
    work = Path(tempfile.mkdtemp(prefix="hallmark-abuse-"))
    print(f"working in {work}; load average {_load()}", flush=True)
    plane, url, grpc_address = start_control_plane(work)
    parts = Plane(plane.pid, str(work))
    try:
        agent = attested_agent(url, grpc_address, args.entries)
        channel = agent.channel()
        for _ in range(50):  # warm up
            agent.sync(channel)

        def flood(kind: str, **extra: Any) -> Flood:
            return Flood(
                kind,
                url,
                grpc_address,
                agent.trust_domain,
                agent.roots_pem,
                cpus=frozenset(flood_cpus),
                nice=args.flood_nice,
                rate=extra.pop("rate", args.rate),
                source=args.flood_source,
                **extra,
            )

        chosen = set(filter(None, args.floods.split(",")))
        phases: list[tuple[str, list[Flood]]] = [
            (label, floods)
            for kind, label, floods in (
                ("sni", "SNI flood", [flood("sni")] * args.sni_processes),
                (
                    "idle",
                    "idle-connection flood",
                    [flood("idle", connections=args.idle_connections)],
                ),
                ("attest", "attestation-failure flood", [flood("attest")] * args.attest_processes),
                (
                    "signup",
                    "signup flood",
                    [flood("signup", connections=args.signup_connections, rate=args.signup_rate)],
                ),
            )
            if kind in chosen
        ]

        def alone() -> Samples:
            return measure(agent, channel, args.calls, args.seconds)

        report = Report()
        report.add("alone", *PlaneCpu.during(parts, alone), None)
        for label, floods in phases:
            samples, result, cpu = during(floods, args.seconds, alone, parts)
            report.add(label, samples, cpu, result)
        report.add("alone, again", *PlaneCpu.during(parts, alone), None)
        channel.close()
    finally:
        plane.terminate()
        plane.wait(timeout=60)
    report.summary()
    print(f"  load average at the end: {_load()}")


def _cpus(text: str) -> set[int]:
    """A taskset-style list: `1`, `0,1`, `2-3`."""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _load() -> str:
    return " ".join(f"{n:.1f}" for n in os.getloadavg())


class Report:
    """Rows as they are measured, then the table against the goal."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, Samples, FloodResult | None]] = []
        self.per_sync: dict[str, float] | None = None  # the plane's CPU seconds a sync, alone

    def add(self, label: str, samples: Samples, cpu: PlaneCpu, flood: FloodResult | None) -> None:
        self.rows.append((label, samples, flood))
        p50, p99 = p50_p99(samples.steady)
        print(f"  {label:<28} p50 {p50 * 1e3:7.2f} ms  p99 {p99 * 1e3:7.2f} ms", flush=True)
        syncs = len(samples.steady) + len(samples.fresh)
        if self.per_sync is None and syncs:
            self.per_sync = {k: v / syncs for k, v in cpu.used.items()}
        parts = ", ".join(f"{k} {v / cpu.seconds:.2f}" for k, v in cpu.used.items())
        print(f"    plane's cores busy: {parts}", flush=True)
        if flood is not None:
            got = ", ".join(f"{k}: {v}" for k, v in flood.outcomes.most_common())
            print(f"    flood: {got}; its clients used {flood.client_cores:.2f} cores", flush=True)
            # the plane's CPU less what the legitimate agent's syncs cost alone, per action
            alone = self.per_sync or {}
            spent = {k: v - alone.get(k, 0.0) * syncs for k, v in cpu.used.items()}
            actions = max(flood.actions, 1)
            per = ", ".join(f"{k} {v / actions * 1e3:.3f}" for k, v in spent.items() if v > 0)
            total = sum(v for v in spent.values() if v > 0) / actions * 1e3
            print(
                f"    plane CPU per flood action ({actions}): {total:.3f} ms ({per})",
                flush=True,
            )
        if samples.errors:
            print(f"    legitimate agent's failed calls: {dict(samples.errors)}", flush=True)

    def summary(self) -> None:
        alone = p50_p99(self.rows[0][1].steady)[1]
        alone_fresh = p50_p99(self.rows[0][1].fresh)[1]
        print(
            "\nSyncAuthorizedEntries of one legitimate agent (ms); ratio = p99 / p99 alone;"
            f" goal <= {GOAL:.0f}x"
        )
        print(
            f"  {'phase':<28} {'n':>5} {'p50':>7} {'p99':>7} {'ratio':>6} {'goal':>8}"
            f"   {'fresh n':>7} {'p50':>7} {'p99':>7} {'ratio':>6}  failed"
        )
        for label, samples, _ in self.rows:
            p50, p99 = p50_p99(samples.steady)
            f50, f99 = p50_p99(samples.fresh)
            ratio = p99 / alone
            verdict = "-" if label.startswith("alone") else ("MET" if ratio <= GOAL else "NOT MET")
            print(
                f"  {label:<28} {len(samples.steady):>5} {p50 * 1e3:7.2f} {p99 * 1e3:7.2f}"
                f" {ratio:5.2f}x {verdict:>8}   {len(samples.fresh):>7} {f50 * 1e3:7.2f}"
                f" {f99 * 1e3:7.2f} {f99 / alone_fresh:5.2f}x  {sum(samples.errors.values())}"
            )
        print(f"  ({os.cpu_count()} cores shared by the plane, the agent and the flood clients)")


if __name__ == "__main__":
    main()
