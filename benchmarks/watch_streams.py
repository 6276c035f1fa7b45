"""WatchUpdates at scale: N agents' streams over the agent-API processes, memory and fan-out.

Starts `hallmark up` with `--agent-api-processes` agent-API processes sharing the gRPC port
(SO_REUSEPORT: the kernel spreads connections), attests one agent, then opens `--streams`
WatchUpdates streams, each on a TLS connection of its own (as N agents hold them), from
`--client-processes` grpc.aio client processes (spawned, so no client holds more than its
share of descriptors). It prints each agent-API process's resident memory and descriptors
before and with the streams open, the memory per stream, then for `--rounds` registrations
(one `POST /api/v1/entries` each) the time from the call to each stream's notice: p50, p99,
max, and how many streams got it. A server process's file descriptors bound its share: each
stream holds three (the TLS socket and both ends of its relay to the gRPC server), so a
process limited to 20,000 descriptors holds at most about 6,500 streams; 10,000 streams
need two processes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from benchmarks.abuse import STARTED_TIMEOUT, Agent, _signup

OPEN_AT_ONCE = 50  # handshakes a client process runs at the same time


def _attested(url: str, grpc_address: str) -> tuple[Agent, dict[str, str], str]:
    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from attestors.node import join_token
    from hallmark.protos import agent_pb2, agent_pb2_grpc
    from hallmark.x509svid import make_csr

    tenant = _signup(url, "watch-bench")
    td, headers = tenant["trust_domain"], {"Authorization": f"Bearer {tenant['token']}"}
    alias = f"spiffe://{td}/node/bench"
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
    while True:
        channel = agent.channel()
        try:
            # AttestAgent is a conversation; a join token needs no challenge: one answer.
            answer = next(
                agent_pb2_grpc.AgentAPIStub(channel).AttestAgent(
                    iter([request]), metadata=agent.metadata, timeout=30
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
    return agent, headers, alias


def _job(agent: Agent) -> dict[str, Any]:
    """What a client process needs, picklable (keys as PEM)."""
    from cryptography.hazmat.primitives import serialization

    return {
        "grpc_address": agent.grpc_address,
        "trust_domain": agent.trust_domain,
        "roots_pem": agent.roots_pem,
        "chain_pem": agent.chain_pem,
        "key_pem": agent.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }


def _client(job: dict[str, Any], count: int, rounds: int, ready: Any, results: Any) -> None:
    asyncio.run(_watch(job, count, rounds, ready, results))


async def _watch(job: dict[str, Any], count: int, rounds: int, ready: Any, results: Any) -> None:
    import grpc

    from hallmark.protos import agent_pb2, agent_pb2_grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=job["roots_pem"],
        private_key=job["key_pem"],
        certificate_chain=job["chain_pem"],
    )
    options = [
        ("grpc.ssl_target_name_override", job["trust_domain"]),
        ("grpc.default_authority", job["trust_domain"]),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    metadata = (("x-hallmark-trust-domain", job["trust_domain"]),)
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    # The channels are kept: a grpc.aio channel nobody holds is collected, and closing it
    # cancels its stream (CANCELLED on the client's side, nothing on the server's).
    channels: list[Any] = []
    streams: list[Any] = []
    revisions: list[int] = []

    async def open_one() -> None:
        async with gate:
            channel = grpc.aio.secure_channel(job["grpc_address"], credentials, options=options)
            channels.append(channel)
            stream = agent_pb2_grpc.AgentAPIStub(channel).WatchUpdates(
                agent_pb2.WatchUpdatesRequest(), metadata=metadata
            )
            first = await stream.read()
            streams.append(stream)
            revisions.append(first.entries_revision)

    await asyncio.gather(*(open_one() for _ in range(count)))
    ready.put(len(streams))

    async def next_change(index: int) -> float:
        while True:  # a keepalive notice carries the same revision: wait for the change
            notice = await streams[index].read()
            if notice.entries_revision > revisions[index]:
                revisions[index] = notice.entries_revision
                return time.time()

    for _ in range(rounds):
        arrivals = await asyncio.gather(*(next_change(i) for i in range(len(streams))))
        results.put(list(arrivals))


def _agent_api_pids(plane_pid: int) -> list[int]:
    children = Path(f"/proc/{plane_pid}/task/{plane_pid}/children").read_text().split()
    pids = [
        int(pid) for pid in children if b"agent-api" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    if not pids:
        raise SystemExit("no agent-api process under hallmark up")
    return sorted(pids)


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def _report_memory(
    servers: list[int], before: dict[int, tuple[float, int]], opened: int, opening: float
) -> None:
    with_streams = {pid: (_rss_mib(pid), _descriptors(pid)) for pid in servers}
    print(
        f"\n{opened} WatchUpdates streams open on {len(servers)} agent-API processes "
        f"in {opening:.1f} s"
    )
    for pid in servers:
        (rss_before, fds_before), (rss, fds) = before[pid], with_streams[pid]
        held = (fds - fds_before) // 3  # three descriptors a stream
        print(
            f"  pid {pid}: ~{held} streams ({fds} descriptors), RSS {rss_before:.1f} -> "
            f"{rss:.1f} MiB: {(rss - rss_before) * 1024 / max(held, 1):.1f} KiB a stream"
        )
    grown = sum(with_streams[p][0] - before[p][0] for p in servers)
    print(f"agent-API RSS grew {grown:.1f} MiB: {grown * 1024 / max(opened, 1):.1f} KiB a stream")


def main() -> None:
    from benchmarks.workload_api import start_control_plane

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10000)
    parser.add_argument("--agent-api-processes", type=int, default=2)
    parser.add_argument("--client-processes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"file descriptor limit (soft, hard): {limit}", flush=True)
    os.environ["HALLMARK_AGENT_API_PROCESSES"] = str(args.agent_api_processes)
    os.environ["HALLMARK_AGENT_API_MAX_CONNECTIONS_PER_SOURCE"] = str(args.streams + 100)
    work = Path(tempfile.mkdtemp(prefix="hallmark-watch-"))
    print(f"working in {work}", flush=True)
    plane, url, grpc_address = start_control_plane(work)
    clients: list[multiprocessing.Process] = []
    try:
        agent, headers, alias = _attested(url, grpc_address)
        servers = _agent_api_pids(plane.pid)
        before = {pid: (_rss_mib(pid), _descriptors(pid)) for pid in servers}
        context = multiprocessing.get_context("spawn")
        ready, results = context.Queue(), context.Queue()
        share = [args.streams // args.client_processes] * args.client_processes
        share[0] += args.streams - sum(share)
        started = time.monotonic()
        for count in share:
            process = context.Process(
                target=_client, args=(_job(agent), count, args.rounds, ready, results), daemon=True
            )
            process.start()
            clients.append(process)
        opened = sum(ready.get(timeout=1800) for _ in clients)
        opening = time.monotonic() - started
        time.sleep(2)
        _report_memory(servers, before, opened, opening)
        print("\nfan-out: registration call started -> notice read, per stream (ms)")
        print("round  streams   p50      p99      max")
        for number in range(args.rounds):
            sent = time.time()
            requests.post(
                f"{url}/api/v1/entries",
                headers=headers,
                timeout=60,
                json={
                    "spiffe_id": f"spiffe://{agent.trust_domain}/fanout/{number}",
                    "parent_id": alias,
                    "selectors": [f"unix:uid:{2000 + number}"],
                },
            ).raise_for_status()
            arrivals = [t for _ in clients for t in results.get(timeout=600)]
            latencies = [(t - sent) * 1000 for t in arrivals]
            print(
                f"{number + 1:5d}  {len(latencies):7d}  {statistics.median(latencies):7.1f}  "
                f"{_percentile(latencies, 0.99):7.1f}  {max(latencies):7.1f}",
                flush=True,
            )
        after = ", ".join(f"{_rss_mib(pid):.1f}" for pid in servers)
        print(f"agent-API RSS after the rounds (MiB, per process): {after}")
    finally:
        for process in clients:
            process.terminate()
        plane.terminate()
        plane.wait(timeout=120)


if __name__ == "__main__":
    main()
