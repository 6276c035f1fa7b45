"""WatchUpdates at scale: N agents' streams over the agent-API processes, memory and fan-out.

Starts `hallmark up` with `--agent-api-processes` agent-API processes sharing the gRPC port
(SO_REUSEPORT: the kernel spreads connections), attests one agent, then opens `--streams`
WatchUpdates streams, each on a TLS connection of its own presenting that agent's SVID (as N
agents hold them), from `--client-processes` spawned client processes of simulated agents
(benchmarks/h2agents.py: asyncio + ssl + h2, not grpc.aio, whose clients lose streams of
their own past a few thousand channels a process). It prints the streams opened (and why any
were not), each agent-API process's resident memory and descriptors before and with the
streams open, the memory per stream, the agent-API cores busy while opening and while the
streams are held idle for `--hold` seconds (a keepalive round), then for `--rounds`
registrations (one `POST /api/v1/entries` each) the time from the call to each stream's
notice: p50, p99, max, how many of the open streams got it, how ended streams ended, and the
cores the agent-API and client processes kept busy. A server process's file descriptors
bound its share: each stream holds three (the TLS socket and both ends of its relay to the
gRPC server), so a process limited to 20,000 descriptors holds at most about 6,500 streams;
10,000 streams need two processes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import ssl
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from benchmarks.abuse import STARTED_TIMEOUT, Agent, _signup

OPEN_AT_ONCE = 50  # handshakes a client process runs at the same time
OPEN_TIMEOUT = 120.0  # connect, handshake and first notice of one stream
ROUND_TIMEOUT = 120.0  # how long a client process waits for one registration's notices


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
    # Every connection is a descriptor: take all the hard limit allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_watch(job, count, rounds, ready, results))


async def _watch(job: dict[str, Any], count: int, rounds: int, ready: Any, results: Any) -> None:
    from benchmarks.h2agents import WatchStream, open_stream, tls_context
    from hallmark.protos import agent_pb2

    context = tls_context(job["roots_pem"], job["chain_pem"], job["key_pem"])
    host, _, port = job["grpc_address"].rpartition(":")
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    streams: list[WatchStream] = []
    failed: Counter[str] = Counter()

    async def open_one() -> None:
        async with gate:
            try:
                stream = await asyncio.wait_for(
                    open_stream(
                        host,
                        int(port),
                        context,
                        job["trust_domain"],
                        agent_pb2.UpdateNotice.FromString,
                    ),
                    OPEN_TIMEOUT,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                failed[f"{type(exc).__name__}: {exc}"[:120]] += 1
            else:
                streams.append(stream)

    await asyncio.gather(*(open_one() for _ in range(count)))
    ready.put((len(streams), dict(failed)))

    for number in range(rounds):
        # A round is over when every stream still open saw its change, or ROUND_TIMEOUT
        # after the registration (streams that never see it are counted, not awaited).
        deadline = time.monotonic() + ROUND_TIMEOUT
        while time.monotonic() < deadline and not all(
            len(s.changes) > number or s.ended for s in streams
        ):
            await asyncio.sleep(0.05)
        results.put(
            {
                "arrivals": [s.changes[number] for s in streams if len(s.changes) > number],
                "open": sum(1 for s in streams if not s.ended),
                "ended": dict(Counter(s.ended for s in streams if s.ended)),
            }
        )
    await asyncio.Event().wait()  # hold the streams until the benchmark ends this process


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


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


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


def _hold(servers: list[int], seconds: float) -> None:
    """Hold the streams idle for `seconds`: each stream's keepalive notice (and its agent
    re-checked) every WATCH_KEEPALIVE_SECONDS is all the agent-API processes do."""
    if seconds <= 0:
        return
    cpu, began = _cpu_seconds(servers), time.monotonic()
    time.sleep(seconds)
    cores = (_cpu_seconds(servers) - cpu) / (time.monotonic() - began)
    print(f"holding the streams idle for {seconds:.0f} s: agent-API cores busy {cores:.2f}")


def _fan_out(
    url: str,
    headers: dict[str, str],
    trust_domain: str,
    alias: str,
    *,
    servers: list[int],
    clients: list[int],
    results: Any,
    rounds: int,
) -> None:
    """`rounds` registrations, one at a time; each one's notice times across every stream."""
    print("\nfan-out: registration call started -> notice read, per stream (ms)")
    print("round  notified/open   p50      p99      max    cores (agent-API, clients)  ended")
    for number in range(rounds):
        sent, cpu, client_cpu = time.time(), _cpu_seconds(servers), _cpu_seconds(clients)
        requests.post(
            f"{url}/api/v1/entries",
            headers=headers,
            timeout=60,
            json={
                "spiffe_id": f"spiffe://{trust_domain}/fanout/{number}",
                "parent_id": alias,
                "selectors": [f"unix:uid:{2000 + number}"],
            },
        ).raise_for_status()
        reports = [results.get(timeout=ROUND_TIMEOUT + 60) for _ in clients]
        took = time.time() - sent
        cores = (_cpu_seconds(servers) - cpu) / took
        client_cores = (_cpu_seconds(clients) - client_cpu) / took
        latencies = [(t - sent) * 1000 for r in reports for t in r["arrivals"]]
        still_open = sum(r["open"] for r in reports)
        ended: Counter[str] = Counter()
        for report in reports:
            ended.update(report["ended"])
        figures = "no notice reached any stream"
        if latencies:
            figures = (
                f"{statistics.median(latencies):7.1f}  {_percentile(latencies, 0.99):7.1f}  "
                f"{max(latencies):7.1f}"
            )
        print(
            f"{number + 1:5d}  {len(latencies):6d}/{still_open:<6d}  {figures}  "
            f"{cores:5.2f}  {client_cores:5.2f}    {dict(ended) or ''}",
            flush=True,
        )


def main() -> None:
    from benchmarks.workload_api import start_control_plane

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10000)
    parser.add_argument("--agent-api-processes", type=int, default=2)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hold", type=float, default=35.0, help="seconds held idle, measured")
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
        started, opening_cpu = time.monotonic(), _cpu_seconds(servers)
        for count in share:
            process = context.Process(
                target=_client, args=(_job(agent), count, args.rounds, ready, results), daemon=True
            )
            process.start()
            clients.append(process)
        opened, failed = 0, Counter[str]()
        for _ in clients:
            count, reasons = ready.get(timeout=1800)
            opened += count
            failed.update(reasons)
        opening = time.monotonic() - started
        opening_cores = (_cpu_seconds(servers) - opening_cpu) / opening
        if failed:
            print(f"{sum(failed.values())} streams not opened: {dict(failed)}")
        time.sleep(2)
        _report_memory(servers, before, opened, opening)
        print(f"agent-API cores busy while opening: {opening_cores:.2f}")
        print(f"load average: {os.getloadavg()}")
        _hold(servers, args.hold)
        _fan_out(
            url,
            headers,
            agent.trust_domain,
            alias,
            servers=servers,
            clients=[process.pid for process in clients if process.pid is not None],
            results=results,
            rounds=args.rounds,
        )
        print(f"load average: {os.getloadavg()}")
        after = ", ".join(f"{_rss_mib(pid):.1f}" for pid in servers)
        print(f"agent-API RSS after the rounds (MiB, per process): {after}")
    finally:
        for process in clients:
            process.terminate()
        plane.terminate()
        plane.wait(timeout=120)


if __name__ == "__main__":
    main()
