"""Run the agent API: grpc.aio on a private Unix socket behind the per-tenant TLS relay."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import datetime as dt
import functools
import logging
import os
import shutil
import signal
import ssl
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from django.conf import settings

from hallmark.protos import agent_pb2
from hallmark.relay import PeerRegistry, Relay, private_socket_path
from hallmark.relaylimits import RelayLimits
from issuance.agentapi.decoding import add_strictly_decoded
from issuance.agentapi.drain import StreamDrain
from issuance.agentapi.limits import AttestationFailures, FailureWindow, SharedFailureCount
from issuance.agentapi.metrics import AgentApiMetrics
from issuance.agentapi.scoped import OrmThreads
from issuance.agentapi.servicer import AgentApiServicer, AgentPeer
from issuance.agentapi.tls import TenantCredentials, TenantSSLContext, base_context
from issuance.agentapi.tracing import AgentApiTracing
from issuance.agentapi.watch import ChangeHub

log = logging.getLogger(__name__)
ORM_WORKERS = 16
MAX_SOCKET_DIR_LENGTH = 90
# asyncio's TLS transport allocates a read buffer of SSLProtocol.max_size (256 KiB) for each
# connection when it is made: with thousands of agents' streams open, that was most of the
# process's memory (benchmarks/watch_streams.py: 354 KiB a stream; 135 KiB at 32 KiB, 111 KiB
# at 8 KiB). The buffer takes what the agent sends (requests: small; a larger one, such as a
# batch of CSRs, arrives over several reads), not the answers.
TLS_READ_BUFFER_BYTES = 8 * 1024


class AgentApiServer:
    """One agent API listener; `await start(host, port)` returns the bound port."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        base = Path(directory) if directory else Path(settings.DATA_DIR)
        self.directory = str(base / f"agentapi-{os.getpid()}-{id(self):x}")
        if len(self.directory) > MAX_SOCKET_DIR_LENGTH:
            # sun_path holds 108 bytes; a deep data dir falls back to a private temp dir.
            self.directory = tempfile.mkdtemp(prefix=f"hallmark-agentapi-{os.getpid()}-")
        self.registry: PeerRegistry[AgentPeer] = PeerRegistry()
        # built when an agent's handshake first names a tenant (issuance.agentapi.tls)
        self.credentials = TenantCredentials()
        self.threads = OrmThreads(ORM_WORKERS, "agentapi-orm")
        self.hub = ChangeHub(self._publish_probe)
        self.port = 0
        self.connections = 0
        window = settings.ATTEST_FAILURE_WINDOW_SECONDS
        self.attestation_failures = AttestationFailures(
            limit=settings.ATTEST_FAILURE_LIMIT,
            window=window,
            shared=SharedFailureCount(_shared_redis, window=window),
        )
        self.servicer = AgentApiServicer(
            self.registry,
            self.threads,
            self.hub,
            self.attestation_failures,
            refusal_delay=settings.ATTEST_REFUSAL_DELAY_MS / 1000,
        )
        self._grpc: Any = None
        self._relay: Relay[AgentPeer] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.drain = StreamDrain()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on host:port; `reuse_port` lets peer processes share it (SO_REUSEPORT)."""
        inner = private_socket_path(self.directory)
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES
        self._grpc = grpc.aio.server(
            interceptors=[AgentApiMetrics(self.registry), AgentApiTracing(), self.drain]
        )
        await self.hub.start()
        self.hub.on_event(self.credentials.bundle_changed)
        # Not add_AgentAPIServicer_to_server: its decoding turns a malformed request into
        # UNKNOWN; these handlers answer INVALID_ARGUMENT `malformed_request`.
        service = agent_pb2.DESCRIPTOR.services_by_name["AgentAPI"]
        add_strictly_decoded(self.servicer, self._grpc, service)
        self._grpc.add_insecure_port("unix:" + inner)
        await self._grpc.start()
        await asyncio.wrap_future(self.credentials.start())
        context = base_context()
        context.sni_callback = self.credentials.sni_callback
        self._relay = Relay(inner, self.registry, self._identify)
        self._relay.on_refused = _count_refused_connection
        self._relay.before_handshake = self.credentials.build_awaited
        limits = RelayLimits(
            max_connections_per_source=settings.AGENT_API_MAX_CONNECTIONS_PER_SOURCE,
            idle_timeout=float(settings.AGENT_API_IDLE_TIMEOUT),
            handshake_timeout=float(settings.AGENT_API_HANDSHAKE_TIMEOUT),
            refused_name_delay=settings.AGENT_API_REFUSED_NAME_DELAY_MS / 1000,
        )
        self.port = await self._relay.serve_tls(
            host,
            port,
            context,
            reuse_port=reuse_port,
            limits=limits,
            server_name_filter=self.credentials.admits,  # unknown names refused before TLS
            # sources over their failed-attestation limit: closed at accept, before TLS
            source_filter=self._may_connect,
        )
        self._flusher = asyncio.create_task(self._flush_periodically())
        shared = " (port shared with peer processes)" if reuse_port else ""
        log.info("agent API pid %d listening on %s:%d%s", os.getpid(), host, self.port, shared)
        return self.port

    def _may_connect(self, source: str) -> bool:
        return not self.attestation_failures.refuses_connection(source)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.attestation_failures.window)
            await self.flush_attestation_failures()

    async def flush_attestation_failures(self, *, everything: bool = False) -> int:
        """Write the aggregated audit rows of the failure windows that ended; returns how many."""
        windows = self.attestation_failures.due(everything=everything)
        for window in windows:
            write = functools.partial(
                _write_failures, window=window, seconds=self.attestation_failures.window
            )
            try:
                await self.threads.in_tenant_schema(window.tenant_id, write)
            except Exception as exc:  # a vanished tenant or a database blip: counts are lost
                log.warning("agent API: audit of failed attestations not written: %s", exc)
        return len(windows)

    async def _publish_probe(self, tenant_id: uuid.UUID) -> None:
        from tenants.events import publish_change

        probe = functools.partial(publish_change, tenant_id=tenant_id, kind="entries")
        await asyncio.wrap_future(self.threads.submit(probe))

    async def _identify(self, writer: asyncio.StreamWriter) -> AgentPeer | None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        context = ssl_object.context
        if not isinstance(context, TenantSSLContext):
            return None  # no SNI switch happened: no tenant, nothing to relay
        self.connections += 1
        peername = writer.get_extra_info("peername")
        address = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else ""
        try:
            certificate = ssl_object.getpeercert(binary_form=True)
        except (ValueError, ssl.SSLError):
            certificate = None
        return AgentPeer(
            tenant_id=context.tenant_id,
            server_name=context.trust_domain,
            certificate_der=certificate or None,
            address=address,
        )

    async def stop(self) -> None:
        # Per-process totals: with several processes on one port, each says what it served.
        log.info(
            "agent API pid %d stopping after %d calls on %d connections",
            os.getpid(),
            self.servicer.calls,
            self.connections,
        )
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        # The drain: no new connections; open streams end (their agents reconnect to a peer
        # process); calls in flight get the grace period; then the remaining connections go.
        if self._relay is not None:
            await self._relay.stop_accepting()
        self.drain.drain()
        if self._grpc is not None:
            await self._grpc.stop(grace=float(settings.SHUTDOWN_GRACE_SECONDS))
        if self._relay is not None:
            await self._relay.close()
        await self.servicer.rechecks.close()
        await self.flush_attestation_failures(everything=True)
        await self.hub.close()
        await asyncio.to_thread(self.credentials.close)
        await asyncio.to_thread(self.threads.close)
        shutil.rmtree(self.directory, ignore_errors=True)


def _shared_redis() -> Any:
    from tenants.events import shared_redis

    return shared_redis()


def _count_refused_connection(reason: str) -> None:
    from config import metrics

    metrics.AGENT_API_REFUSED_CONNECTIONS.labels(reason).inc()


def _write_failures(tenant: Any, *, window: FailureWindow, seconds: float) -> None:
    from issuance.services import record_failed_attestations

    record_failed_attestations(
        tenant=tenant,
        source=window.source,
        count=window.count - window.logged,
        codes=window.codes,
        window_start=dt.datetime.fromtimestamp(window.started, tz=dt.UTC),
        window_seconds=seconds,
        connections_refused=window.connections_refused,
    )


async def _serve(
    host: str, port: int, reuse_port: bool, on_listening: Callable[[], None] | None
) -> None:
    server = AgentApiServer()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(host, port, reuse_port=reuse_port)
        if on_listening is not None:
            on_listening()
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await server.stop()


def serve(
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve the agent API on host:port until SIGTERM or SIGINT (Django must be set up).

    `on_listening` runs once the port is bound (the health heartbeat starts there, so
    /healthz never reports an agent API that does not accept connections yet).
    """
    asyncio.run(_serve(host, port, reuse_port, on_listening))
