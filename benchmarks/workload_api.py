"""Workload API latency and registration → SVID latency against a real Hallmark stack.

Prints, from one run on one machine:
  raw gRPC unary round trip over a Unix socket (the floor), p50/p99
  FetchX509SVID through py-spiffe, first message of the stream (SVIDs cached by the agent)
  registration (POST /api/v1/entries) → the SVID in an open py-spiffe stream, p50/p99
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

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


def raw_grpc_round_trip(directory: Path, calls: int) -> list[float]:
    """A do-nothing unary gRPC call over a Unix socket: what any Workload API pays at least."""
    path = directory / "raw.sock"
    handler = grpc.method_handlers_generic_handler(
        "Bench", {"Ping": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{path}")
    server.start()
    channel = grpc.insecure_channel(f"unix:{path}")
    ping = channel.unary_unary("/Bench/Ping")
    for _ in range(100):
        ping(b"x")
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        ping(b"x")
        samples.append(time.perf_counter() - started)
    channel.close()
    server.stop(0)
    return samples


def raw_fetch_x509(socket_path: Path, calls: int) -> list[float]:
    """FetchX509SVID's first message over plain grpcio: the agent's cost without py-spiffe."""
    from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc

    channel = grpc.insecure_channel(f"unix:{socket_path}")
    stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)
    header = (("workload.spiffe.io", "true"),)
    samples = []
    for i in range(calls + 100):
        started = time.perf_counter()
        stream = stub.FetchX509SVID(workloadapi_pb2.X509SVIDRequest(), metadata=header)
        next(stream)
        stream.cancel()
        if i >= 100:
            samples.append(time.perf_counter() - started)
    channel.close()
    return samples


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

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def register(self, path: str) -> str:
        spiffe_id = f"spiffe://{self.trust_domain}{path}"
        requests.post(
            f"{self.url}/api/v1/entries",
            headers=self.headers,
            timeout=30,
            json={
                "spiffe_id": spiffe_id,
                "parent_id": self.alias,
                "selectors": [f"unix:uid:{os.getuid()}"],
            },
        ).raise_for_status()
        return spiffe_id


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


def registration_to_svid(stack: Stack, client: WorkloadApiClient, count: int) -> list[float]:
    """POST an entry, then wait for its SVID on an already open py-spiffe stream."""
    seen: dict[str, float] = {}
    lock = threading.Condition()

    def on_update(context) -> None:  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        with lock:
            for svid in context.x509_svids:
                seen.setdefault(str(svid.spiffe_id), now)
            lock.notify_all()

    stream = client.stream_x509_contexts(on_success=on_update, on_error=lambda e: None)
    samples = []
    for i in range(count):
        started = time.perf_counter()
        spiffe_id = stack.register(f"/bench/r{i}")
        with lock:
            if not lock.wait_for(lambda sid=spiffe_id: sid in seen, timeout=30):
                raise SystemExit(f"{spiffe_id} never reached the workload")
            samples.append(seen[spiffe_id] - started)
    stream.cancel()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="Workload API calls to time")
    parser.add_argument("--registrations", type=int, default=50, help="registrations to time")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hallmark-bench-"))
    print(f"working in {work}", flush=True)
    raw = raw_grpc_round_trip(work, args.calls)
    with running_stack(work) as stack:
        client = first_svid_client(stack, work)
        fetch = py_spiffe_fetch(client, args.calls)
        raw_fetch = raw_fetch_x509(stack.socket_path, args.calls)
        registration = registration_to_svid(stack, client, args.registrations)
        client.close()
    print()
    print(f"raw gRPC unary over a Unix socket        {percentiles(raw)}")
    print(f"FetchX509SVID, raw gRPC, first message   {percentiles(raw_fetch)}")
    print(f"FetchX509SVID via py-spiffe (cached)      {percentiles(fetch)}")
    print(f"registration -> SVID in workload stream  {percentiles(registration)}")


if __name__ == "__main__":
    main()
