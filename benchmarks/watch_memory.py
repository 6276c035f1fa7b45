"""Where a WatchUpdates stream's memory goes on the agent-API processes, in three layers.

Starts `hallmark up` (as benchmarks/watch_streams.py does), attests one agent, then opens
`--connections` mTLS connections presenting its SVID three times over, holding all of them,
and prints the agent-API processes' resident memory added by each batch: connections that
only complete the TLS handshake (the relay's side, its connection to the inner gRPC server
and grpc's idle connection there), connections that also send the HTTP/2 preface and
settings (grpc's HTTP/2 connection set up), and connections carrying a WatchUpdates stream
(the call). `.venv/bin/python -m benchmarks.watch_memory [--connections 1500]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import ssl
import tempfile
from pathlib import Path
from typing import Any

import h2.config
import h2.connection

from benchmarks import h2agents
from benchmarks.watch_streams import OPEN_AT_ONCE, _agent_api_pids, _attested, _job, _rss_mib

SETTLE_SECONDS = 3.0


class _Silent(asyncio.Protocol):
    """A connection that says nothing after TLS, or only the HTTP/2 preface."""

    def __init__(self, preface: bool) -> None:
        self._preface = preface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._preface:
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
            assert isinstance(transport, asyncio.Transport)
            transport.write(connection.data_to_send())

    def data_received(self, data: bytes) -> None:
        pass  # settings, acks: held, not answered (the server expects nothing more)


async def _layers(job: dict[str, Any], servers: list[int], count: int) -> None:
    from hallmark.protos import agent_pb2

    context = h2agents.tls_context(job["roots_pem"], job["chain_pem"], job["key_pem"])
    host, _, port = job["grpc_address"].rpartition(":")
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    held: list[Any] = []

    async def open_one(layer: str) -> None:
        async with gate:
            if layer == "WatchUpdates stream":
                held.append(
                    await h2agents.open_stream(
                        host,
                        int(port),
                        context,
                        job["trust_domain"],
                        agent_pb2.UpdateNotice.FromString,
                    )
                )
                return
            transport, _ = await loop.create_connection(
                lambda: _Silent(preface=layer == "HTTP/2 preface"),
                host,
                int(port),
                ssl=context,
                server_hostname=job["trust_domain"],
            )
            held.append(transport)

    print(f"agent-API resident memory added per connection ({count} a layer):")
    for layer in ("TLS only", "HTTP/2 preface", "WatchUpdates stream"):
        before = sum(_rss_mib(pid) for pid in servers)
        await asyncio.gather(*(open_one(layer) for _ in range(count)))
        await asyncio.sleep(SETTLE_SECONDS)
        grown = sum(_rss_mib(pid) for pid in servers) - before
        print(f"  {layer:20s} +{grown:7.1f} MiB  {grown * 1024 / count:6.1f} KiB a connection")


def main() -> None:
    from benchmarks.workload_api import start_control_plane

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1500)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ["HALLMARK_AGENT_API_MAX_CONNECTIONS_PER_SOURCE"] = str(3 * args.connections + 100)
    work = Path(tempfile.mkdtemp(prefix="hallmark-watch-memory-"))
    plane, url, grpc_address = start_control_plane(work)
    try:
        agent, _, _ = _attested(url, grpc_address)
        asyncio.run(_layers(_job(agent), _agent_api_pids(plane.pid), args.connections))
    except ssl.SSLError as exc:
        raise SystemExit(f"TLS failed: {exc}") from None
    finally:
        plane.terminate()
        plane.wait(timeout=120)


if __name__ == "__main__":
    main()
