"""Load for benchmarks/minting.py from client processes: agents on the agent API, OpenBao PKI.

The client side is Python too, so one process would measure its own GIL; each client process
sets up (attests its agents, opens its connections, warms up), waits for the others, then
mints for the same stretch of time and reports how many SVIDs it got and the CPU it used.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import multiprocessing
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

SETUP_TIMEOUT = 300.0


@dataclass(frozen=True)
class Share:
    """One client process's part of a measurement (monotonic clock: system-wide on Linux)."""

    count: int
    started: float
    finished: float
    cpu_seconds: float


@dataclass(frozen=True)
class Measurement:
    """SVIDs per second over all client processes, the cores the clients used, and what
    `watch` returned at the start and at the end of the timed stretch."""

    rate: float
    seconds: float
    client_cores: float
    watched: tuple[Any, Any] = (None, None)


@dataclass(frozen=True)
class AgentJob:
    """`agents` attested agents in one client process, each on its own connection."""

    url: str
    grpc_address: str
    trust_domain: str
    api_token: str
    csrs: tuple[bytes, ...]
    agents: int


@dataclass(frozen=True)
class PkiJob:
    """One client of OpenBao's PKI `sign` endpoint, on one keep-alive connection."""

    address: str
    token: str
    mount: str
    csr_pems: tuple[str, ...]


def run(
    jobs: list[AgentJob] | list[PkiJob],
    seconds: float,
    watch: Callable[[], Any] = lambda: None,
) -> Measurement:
    """One process per job; all set up, then all mint for `seconds`; the overall rate.

    `watch` is called as the clients start minting and once they have all finished (to
    read the CPU time of the server's processes over exactly that stretch).
    """
    context = multiprocessing.get_context("spawn")  # no inherited gRPC or event-loop state
    barrier = context.Barrier(len(jobs) + 1, timeout=SETUP_TIMEOUT)
    results: Any = context.Queue()
    processes = [
        context.Process(target=_child, args=(job, seconds, barrier, results), daemon=True)
        for job in jobs
    ]
    for process in processes:
        process.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()  # broken when a child failed its set-up; its error is in the queue
    first = watch()
    shares: list[Share] = []
    for _ in processes:
        try:
            answer = results.get(timeout=SETUP_TIMEOUT + seconds)
        except queue.Empty:
            raise SystemExit("a client process gave no answer") from None
        if isinstance(answer, str):
            raise SystemExit(f"a client process failed:\n{answer}")
        shares.append(answer)
    last = watch()
    for process in processes:
        process.join(timeout=30)
    span = max(s.finished for s in shares) - min(s.started for s in shares)
    return Measurement(
        rate=sum(s.count for s in shares) / span,
        seconds=span,
        client_cores=sum(s.cpu_seconds for s in shares) / span,
        watched=(first, last),
    )


def _child(job: AgentJob | PkiJob, seconds: float, barrier: Any, results: Any) -> None:
    try:
        if isinstance(job, AgentJob):
            share = asyncio.run(_agents(job, seconds, barrier))
        else:
            share = _pki(job, seconds, barrier)
        results.put(share)
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the run
        barrier.abort()
        results.put(traceback.format_exc())


def _timed(count: Callable[[float], int], seconds: float) -> Share:
    cpu, started = time.process_time(), time.monotonic()
    done = count(started + seconds)
    return Share(done, started, time.monotonic(), time.process_time() - cpu)


# -- agents on the agent API ------------------------------------------------------------------
async def _agents(job: AgentJob, seconds: float, barrier: Any) -> Share:
    from hallmark.protos import agent_pb2

    agents = [await _attested(job) for _ in range(job.agents)]
    first = await agents[0].stub.SyncAuthorizedEntries(
        agent_pb2.SyncAuthorizedEntriesRequest(page_size=5000),
        metadata=agents[0].metadata,
        timeout=30,
    )
    entry_ids = [entry.id for entry in first.entries]
    request = agent_pb2.BatchNewX509SVIDRequest(
        params=[
            agent_pb2.NewX509SVIDParams(entry_id=e, csr=c)
            for e, c in zip(entry_ids, job.csrs, strict=False)
        ]
    )
    for agent in agents:  # warm up, and check that real SVIDs come back
        _check_svids(job, await agent.mint(request))
    await asyncio.to_thread(barrier.wait)
    cpu, started = time.process_time(), time.monotonic()
    deadline = started + seconds

    async def mint(agent: _Agent) -> int:
        count = 0
        while time.monotonic() < deadline:
            response = await agent.mint(request)
            failed = [r for r in response.results if r.error_code or not r.svid_chain]
            if failed:
                raise SystemExit(f"minting failed: {failed[0].error_code}: {failed[0].error}")
            count += len(response.results)
        return count

    done = sum(await asyncio.gather(*(mint(a) for a in agents)))
    share = Share(done, started, time.monotonic(), time.process_time() - cpu)
    for agent in agents:
        await agent.channel.close()
    return share


@dataclass(frozen=True)
class _Agent:
    """An attested agent's own mTLS connection to the agent API."""

    channel: Any
    stub: Any
    metadata: tuple[tuple[str, str], ...]

    async def mint(self, request: Any) -> Any:
        return await self.stub.BatchNewX509SVID(request, metadata=self.metadata, timeout=60)


async def _attested(job: AgentJob) -> _Agent:
    """An agent attested with a fresh join token, on a connection of its own (mTLS)."""
    import grpc
    import requests
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from agent.client import AgentClient
    from hallmark.bundle import Bundle
    from hallmark.protos import agent_pb2_grpc
    from hallmark.spiffeid import TrustDomain
    from hallmark.x509svid import make_csr

    headers = {"Authorization": f"Bearer {job.api_token}"}
    token = requests.post(
        f"{job.url}/api/v1/join-tokens",
        headers=headers,
        timeout=30,
        json={"ttl": 600, "spiffe_id": f"spiffe://{job.trust_domain}/node/bench"},
    ).json()["token"]
    trust_domain = TrustDomain(job.trust_domain)
    answer = requests.get(f"{job.url}/bundle/{job.trust_domain}", timeout=30)
    bundle = Bundle.parse(trust_domain, answer.content)
    client = AgentClient(job.grpc_address, trust_domain)
    await client.configure(bundle, None)
    key = ec.generate_private_key(ec.SECP256R1())
    attestation = await client.attest(token, make_csr(key))
    await client.close()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=attestation.bundle.x509_pem(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate_chain=b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in attestation.chain
        ),
    )
    channel = grpc.aio.secure_channel(
        job.grpc_address,
        credentials,
        options=[
            ("grpc.ssl_target_name_override", job.trust_domain),
            ("grpc.default_authority", job.trust_domain),
            # Its own TCP connection, as a separate agent has: the kernel spreads connections,
            # not calls, over the agent-API processes.
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )
    return _Agent(
        channel,
        agent_pb2_grpc.AgentAPIStub(channel),
        (("x-hallmark-trust-domain", job.trust_domain),),
    )


def _check_svids(job: AgentJob, response: Any) -> None:
    """Every result is a chain that verifies against the trust domain's bundle."""
    import requests
    from cryptography import x509

    from hallmark.bundle import Bundle
    from hallmark.spiffeid import TrustDomain
    from hallmark.x509svid import verify_x509_svid

    trust_domain = TrustDomain(job.trust_domain)
    bundle = Bundle.parse(
        trust_domain, requests.get(f"{job.url}/bundle/{job.trust_domain}", timeout=30).content
    )
    if len(response.results) != len(job.csrs):
        raise SystemExit(f"asked for {len(job.csrs)} SVIDs, got {len(response.results)}")
    for result in response.results:
        if result.error_code:
            raise SystemExit(f"minting failed: {result.error_code}: {result.error}")
        chain = [x509.load_der_x509_certificate(bytes(d)) for d in result.svid_chain]
        verify_x509_svid(chain, list(bundle.x509_authorities))


# -- OpenBao PKI --------------------------------------------------------------------------------
def _pki(job: PkiJob, seconds: float, barrier: Any) -> Share:
    """POST /v1/<mount>/sign/svid over one keep-alive connection (a lean client, not hvac)."""
    parts = urlparse(job.address)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"X-Vault-Token": job.token, "Content-Type": "application/json"}
    path = f"/v1/{job.mount}/sign/svid"

    def sign(index: int) -> None:
        body = json.dumps(
            {
                "csr": job.csr_pems[index % len(job.csr_pems)],
                "uri_sans": f"spiffe://pki.test/w{index}",
            }
        )
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        payload = answer.read()
        if answer.status != 200 or b"-----BEGIN CERTIFICATE-----" not in payload:
            raise SystemExit(f"OpenBao PKI sign answered {answer.status}: {payload[:300]!r}")

    for index in range(10):  # warm up the connection and the mount
        sign(index)
    barrier.wait()

    def count(deadline: float) -> int:
        done = 0
        while time.monotonic() < deadline:
            sign(done)
            done += 1
        return done

    share = _timed(count, seconds)
    connection.close()
    return share
