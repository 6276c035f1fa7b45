"""Workload API latency and registration → SVID latency against a real Hallmark stack.

Prints, for each of `--runs` runs on one machine, and each from a small executable (a copy of
the interpreter) and a large one (the same copy padded with zeros to `--large-mb` MB, so the
agent's unix:sha256 has a real file to hash):
  raw gRPC unary round trip over a Unix socket (the floor), p50/p99, measured by the same
  client process in the same run, taking turns with the calls below call by call
  FetchX509SVID first message, FetchJWTSVID, FetchJWTBundles first message, ValidateJWTSVID
  (raw grpcio), p50/p99 and the ratio of each to the floor samples it took turns with
and once per run: FetchX509SVID through py-spiffe, and registration (POST /api/v1/entries) →
the SVID in an open py-spiffe stream, p50/p99 with its stages: the REST commit (the POST's
answer), the change event reaching the agent as a WatchUpdates notice, the agent's entry sync,
its mint, its publish, the new message on a raw gRPC stream, then the py-spiffe callback.
`--registrations-only` skips the per-call figures (the registration path alone, more samples).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import requests
from spiffe import WorkloadApiClient

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1e3:8.3f} ms   p99 {p99 * 1e3:8.3f} ms   (n={len(ordered)})"


AUDIENCE = "bench-audience"
HEADER = (("workload.spiffe.io", "true"),)
WARMUP = 50


def start_floor_server(directory: Path) -> tuple[grpc.Server, Path]:
    """A do-nothing unary gRPC server over a Unix socket: what any Workload API pays at least."""
    path = directory / "raw.sock"
    handler = grpc.method_handlers_generic_handler(
        "Bench", {"Ping": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{path}")
    server.start()
    return server, path


def _paired(
    floor: Callable[[], object], call: Callable[[], object], calls: int
) -> tuple[list[float], list[float]]:
    """`calls` samples of each, the floor and the call taking turns: both meet the same moments
    of the machine (a neighbour's burst, a timer), so their ratio compares like with like."""
    for _ in range(WARMUP):
        floor()
        call()
    floors, samples = [], []
    for _ in range(calls):
        started = time.perf_counter()
        floor()
        middle = time.perf_counter()
        call()
        samples.append(time.perf_counter() - middle)
        floors.append(middle - started)
    return floors, samples


def client_main(socket_path: str, floor_path: str, calls: int) -> None:
    """Run inside the executable under test: time each call, print the samples as JSON."""
    from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc

    floor_channel = grpc.insecure_channel(f"unix:{floor_path}")
    ping = floor_channel.unary_unary("/Bench/Ping")
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call,unused-ignore]

    def first(stream: Any) -> Any:
        message = next(stream)
        stream.cancel()
        return message

    def x509() -> object:
        return first(stub.FetchX509SVID(workloadapi_pb2.X509SVIDRequest(), metadata=HEADER))

    def jwt() -> Any:
        return stub.FetchJWTSVID(
            workloadapi_pb2.JWTSVIDRequest(audience=[AUDIENCE]), metadata=HEADER
        )

    def jwt_bundles() -> object:
        return first(stub.FetchJWTBundles(workloadapi_pb2.JWTBundlesRequest(), metadata=HEADER))

    token = jwt().svids[0].svid

    def validate() -> object:
        return stub.ValidateJWTSVID(
            workloadapi_pb2.ValidateJWTSVIDRequest(audience=AUDIENCE, svid=token), metadata=HEADER
        )

    def transport() -> None:
        # The agent's own floor: its gRPC server (agent.workload.grpcserver), then an answer
        # that costs nothing (UNIMPLEMENTED after the header check: no attestation, no
        # snapshot).
        with contextlib.suppress(grpc.RpcError):
            first(stub.FetchWITSVID(workloadapi_pb2.WITSVIDRequest(), metadata=HEADER))

    results: dict[str, list[float]] = {}
    # Each call takes turns with the floor, call by call: its ratio is to the floor timed in
    # the same moments ("floor:<name>"); "floor" pools them all for the printed floor line.
    for name, call in (
        ("transport", transport),
        ("x509", x509),
        ("jwt", jwt),
        ("jwt_bundles", jwt_bundles),
        ("validate", validate),
    ):
        floors, results[name] = _paired(lambda: ping(b"x"), call, calls)
        results[f"floor:{name}"] = floors
        results.setdefault("floor", []).extend(floors)
    channel.close()
    floor_channel.close()
    json.dump(results, sys.stdout)


def build_executables(work: Path, large_mb: int) -> dict[str, Path]:
    """A copy of the interpreter, and the same copy padded with zeros to `large_mb` MB."""
    interpreter = Path(os.path.realpath(sys.executable))
    small = work / "bench-small"
    large = work / "bench-large"
    shutil.copy2(interpreter, small)
    shutil.copy2(interpreter, large)
    with open(large, "r+b") as handle:
        handle.truncate(large_mb * 1024 * 1024)
        # Real zeros on disk, not a sparse hole: hashing must read every byte.
        handle.seek(interpreter.stat().st_size)
        block = b"\0" * (1024 * 1024)
        while handle.tell() < large_mb * 1024 * 1024:
            handle.write(block[: large_mb * 1024 * 1024 - handle.tell()])
    return {"small": small, "large": large}


def run_client(
    executable: Path, socket_path: Path, floor: Path, calls: int
) -> dict[str, list[float]]:
    import sysconfig

    env = dict(os.environ)
    env["PYTHONHOME"] = sys.base_prefix
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), sysconfig.get_paths()["purelib"]]
    )
    output = subprocess.run(
        [
            str(executable),
            "-m",
            "benchmarks.workload_api",
            "--client",
            str(socket_path),
            str(floor),
            str(calls),
        ],
        env=env,
        check=True,
        capture_output=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    return dict(json.loads(output.stdout))


def start_control_plane(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    http, grpc_port = free_port(), free_port()
    log = open(data_dir / "up.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(BIN / "hallmark"),
            "up",
            "--data-dir",
            str(data_dir / "plane"),
            "--http",
            f"127.0.0.1:{http}",
            "--grpc",
            f"127.0.0.1:{grpc_port}",
            "--bundle-endpoint",
            f"127.0.0.1:{free_port()}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"hallmark up exited; see {data_dir / 'up.log'}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url, f"127.0.0.1:{grpc_port}"
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit("hallmark up did not become healthy in 180 s")


@dataclass
class Stack:
    """A running control plane with one tenant and one agent serving this process's uid."""

    url: str
    token: str
    trust_domain: str
    alias: str
    socket_path: Path
    # One kept-alive HTTP connection, as an automation client holds: the figures are the
    # server's, not a TCP handshake's.
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def register(self, path: str) -> tuple[str, str]:
        """Register an entry for this uid; its SPIFFE ID and entry id."""
        spiffe_id = f"spiffe://{self.trust_domain}{path}"
        answer = self.http.post(
            f"{self.url}/api/v1/entries",
            headers=self.headers,
            timeout=30,
            json={
                "spiffe_id": spiffe_id,
                "parent_id": self.alias,
                "selectors": [f"unix:uid:{os.getuid()}"],
            },
        )
        answer.raise_for_status()
        return spiffe_id, str(answer.json()["id"])

    def delete(self, entry_id: str) -> None:
        self.http.delete(
            f"{self.url}/api/v1/entries/{entry_id}", headers=self.headers, timeout=30
        ).raise_for_status()


@contextlib.contextmanager
def running_stack(work: Path) -> Iterator[Stack]:
    print("starting hallmark up (embedded default) ...", flush=True)
    plane, url, grpc_address = start_control_plane(work)
    agent: subprocess.Popen[bytes] | None = None
    try:
        td = f"bench-{secrets.token_hex(3)}.test"
        token = requests.post(
            f"{url}/api/v1/signup",
            json={
                "name": "bench",
                "trust_domain": td,
                "email": f"ops@{td}",
                "password": "correct horse battery staple",
            },
            timeout=60,
        ).json()["token"]
        stack = Stack(url, token, td, f"spiffe://{td}/node/bench", work / "agent.sock")
        stack.register("/bench/base")
        join = requests.post(
            f"{url}/api/v1/join-tokens",
            headers=stack.headers,
            timeout=30,
            json={"ttl": 600, "spiffe_id": stack.alias},
        ).json()["token"]
        agent = subprocess.Popen(
            [
                str(BIN / "hallmark-agent"),
                "run",
                "--server",
                grpc_address,
                "--trust-domain",
                td,
                f"--join-token={join}",
                "--socket",
                str(stack.socket_path),
                "--data-dir",
                str(work / "agent"),
                "--trust-bundle-url",
                f"{url}/bundle/{td}",
                "--insecure-bootstrap",  # plain http on loopback, a benchmark's own plane
            ],
            stdout=open(work / "agent.log", "wb"),
            stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        yield stack
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=10)
        plane.send_signal(signal.SIGTERM)
        plane.wait(timeout=60)


def first_svid_client(stack: Stack, work: Path) -> WorkloadApiClient:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if stack.socket_path.exists():
                client = WorkloadApiClient(socket_path=f"unix:{stack.socket_path}")
                client.fetch_x509_svid()
                return client
        except Exception:  # not ready yet: the agent is still attesting or minting
            time.sleep(0.2)
    raise SystemExit(f"no SVID from the agent; see {work / 'agent.log'}")


def py_spiffe_fetch(client: WorkloadApiClient, calls: int) -> list[float]:
    for _ in range(100):
        client.fetch_x509_svid()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        client.fetch_x509_svid()
        samples.append(time.perf_counter() - started)
    return samples


class RawStream:
    """A raw gRPC FetchX509SVID stream beside py-spiffe's: when each SPIFFE ID first arrived on
    the wire, before any client parsed the message (no parsing here: the IDs are strings)."""

    def __init__(self, socket_path: Path) -> None:
        from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc

        self.seen: dict[str, float] = {}
        self._channel = grpc.insecure_channel(f"unix:{socket_path}")
        stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(self._channel)  # type: ignore[no-untyped-call,unused-ignore]
        self._stream = stub.FetchX509SVID(workloadapi_pb2.X509SVIDRequest(), metadata=HEADER)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for message in self._stream:
                now = time.time()
                for svid in message.svids:
                    self.seen.setdefault(svid.spiffe_id, now)

    def close(self) -> None:
        self._stream.cancel()
        self._channel.close()


@dataclass(frozen=True)
class Registration:
    """One registration's wall-clock moments (seconds), to place the agent log's lines between."""

    spiffe_id: str
    started: float  # POST sent
    committed: float  # POST answered
    on_wire: float | None  # the SVID's first message on the raw stream
    arrived: float  # py-spiffe's callback had it


def registration_to_svid(
    stack: Stack, client: WorkloadApiClient, count: int, first: int
) -> list[Registration]:
    """POST an entry, then wait for its SVID on an already open py-spiffe stream."""
    seen: dict[str, float] = {}
    current: set[str] = set()
    lock = threading.Condition()

    def on_update(context) -> None:  # type: ignore[no-untyped-def]
        now = time.time()
        with lock:
            current.clear()
            for svid in context.x509_svids:
                seen.setdefault(str(svid.spiffe_id), now)
                current.add(str(svid.spiffe_id))
            lock.notify_all()

    stream = client.stream_x509_contexts(on_success=on_update, on_error=lambda e: None)
    raw = RawStream(stack.socket_path)
    done = []
    for i in range(first, first + count):
        started = time.time()
        spiffe_id, entry_id = stack.register(f"/bench/r{i}")
        committed = time.time()
        with lock:
            if not lock.wait_for(functools.partial(seen.__contains__, spiffe_id), timeout=30):
                raise SystemExit(f"{spiffe_id} never reached the workload")
            arrived = seen[spiffe_id]
        done.append(Registration(spiffe_id, started, committed, raw.seen.get(spiffe_id), arrived))
        # Back to one identity before the next: a workload's stream carries its own SVIDs,
        # and a message of dozens would time the client's parsing, not the path.
        stack.delete(entry_id)
        with lock:
            if not lock.wait_for(lambda: spiffe_id not in current, timeout=30):  # noqa: B023
                raise SystemExit(f"{spiffe_id} was never withdrawn from the workload")
    stream.cancel()
    raw.close()
    return done


def _agent_log(path: Path) -> list[tuple[float, str]]:
    """The agent log's lines as (wall clock seconds, message)."""
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone()
        except ValueError:
            continue
        lines.append((stamp.timestamp(), line[24:]))
    return lines


STAGES = {
    "rest": "REST commit (POST answered)",
    "to_notice": "POST sent -> agent notice",
    "sync": "agent syncs entries",
    "mint": "agent mints (BatchNewX509SVID)",
    "publish": "agent publishes the snapshot",
    "wire": "snapshot -> raw gRPC stream",
    "client": "raw stream -> py-spiffe callback",
}


def registration_stages(
    done: list[Registration], log: list[tuple[float, str]]
) -> dict[str, list[float]]:
    """Split each registration at the agent's own log lines (millisecond stamps).

    rest: POST sent → answered (the entry committed, its change event published on commit);
    to_notice: POST sent → the agent logged the WatchUpdates notice that woke it (the commit,
    then Redis → the agent API's listener → the agent's stream), measured from the POST's
    start because the notice can reach the agent before the answer reaches the client; the
    stages from here on add up to the total: sync: → the agent holds the new entries
    (SyncAuthorizedEntries); mint: → the agent logs the new SVID (key, CSR,
    BatchNewX509SVID); publish: → the agent published the new snapshot; wire: → the message
    on a raw gRPC stream (the Workload API server); client: → py-spiffe's callback
    (its parsing and thread hop).
    """
    stages: dict[str, list[float]] = {k: [] for k in ("total", *STAGES)}
    for r in done:
        window = [(t, m) for t, m in log if r.started - 0.002 <= t <= r.arrived + 0.002]
        noticed = next((t for t, m in window if m.find("notice: ") >= 0), None)
        synced = next((t for t, m in window if m.find("entries at revision") >= 0), None)
        minted = next((t for t, m in window if m.find(f"SVID for {r.spiffe_id} ") >= 0), None)
        published = next(
            (t for t, m in window if m.find("published:") >= 0 and minted and t >= minted), None
        )
        stages["total"].append(r.arrived - r.started)
        stages["rest"].append(r.committed - r.started)
        if None in (noticed, synced, minted, published, r.on_wire):
            continue
        assert noticed and synced and minted and published and r.on_wire  # for mypy
        stages["to_notice"].append(noticed - r.started)
        stages["sync"].append(synced - noticed)
        stages["mint"].append(minted - synced)
        stages["publish"].append(published - minted)
        stages["wire"].append(max(r.on_wire - published, 0.0))
        stages["client"].append(max(r.arrived - r.on_wire, 0.0))
    return stages


def ratio(samples: list[float], floor: list[float]) -> str:
    def p99(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    return (
        f"x{statistics.median(samples) / statistics.median(floor):5.2f} p50  "
        f"x{p99(samples) / p99(floor):5.2f} p99"
    )


LABELS = {
    "floor": "raw gRPC unary (the floor)",
    "transport": "agent's gRPC server, no work",
    "x509": "FetchX509SVID first message",
    "jwt": "FetchJWTSVID",
    "jwt_bundles": "FetchJWTBundles first message",
    "validate": "ValidateJWTSVID",
}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls to time, each kind")
    parser.add_argument(
        "--registrations",
        type=int,
        default=300,
        help="registrations per run (default 300: a p99 of 100 or fewer is the slowest one, "
        "a single stall; of 300 it is the third slowest)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs against the same stack")
    parser.add_argument(
        "--large-mb", type=int, default=100, help="the large executable's size (MB)"
    )
    parser.add_argument(
        "--registrations-only", action="store_true", help="time the registration path alone"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hallmark-bench-"))
    print(f"working in {work}", flush=True)
    executables = {} if args.registrations_only else build_executables(work, args.large_mb)
    floor_server, floor_path = start_floor_server(work)
    with running_stack(work) as stack:
        client = first_svid_client(stack, work)
        pooled: dict[str, list[float]] = {}
        for run in range(1, args.runs + 1):
            load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"\n== run {run} (load average {load})", flush=True)
            for size, executable in executables.items():
                mb = executable.stat().st_size / 1e6
                results = run_client(executable, stack.socket_path, floor_path, args.calls)
                print(f"-- {size} executable ({mb:.2f} MB)")
                for name, label in LABELS.items():
                    line = f"  {label:32s} {percentiles(results[name])}"
                    if name != "floor":
                        line += f"   {ratio(results[name], results[f'floor:{name}'])}"
                    print(line, flush=True)
            if not args.registrations_only:
                fetch = py_spiffe_fetch(client, args.calls)
                print(f"  FetchX509SVID via py-spiffe (cached)  {percentiles(fetch)}")
            done = registration_to_svid(
                stack, client, args.registrations, (run - 1) * args.registrations
            )
            stages = registration_stages(done, _agent_log(work / "agent.log"))
            print(f"  registration -> SVID in stream   {percentiles(stages['total'])}")
            for name, label in STAGES.items():
                if stages[name]:
                    print(f"    {label:34s} {percentiles(stages[name])}")
            for name, samples in stages.items():
                pooled.setdefault(name, []).extend(samples)
        if args.runs > 1:
            print(f"\n== all {args.runs} runs pooled")
            print(f"  registration -> SVID in stream   {percentiles(pooled['total'])}")
            for name, label in STAGES.items():
                if pooled.get(name):
                    print(f"    {label:34s} {percentiles(pooled[name])}")
        client.close()
    floor_server.stop(0)


if __name__ == "__main__":
    main()
