"""Re-checks of the agents behind open WatchUpdates streams, batched per tenant.

A stream re-checks its agent (banned, evicted, SVID superseded or no longer chaining to the
bundle, tenant suspended) at every keepalive and on every "agents" or "bundle" event of its
tenant. One ORM call a stream made holding 10,000 idle streams cost a core of database round
trips (benchmarks/watch_streams.py), and one ban woke a call for every stream of the tenant.
Here the re-checks of a tenant that come within RECHECK_WINDOW_SECONDS of each other go to
the database together: one `authenticate_agents` call for up to MAX_BATCH streams, each
answered with its own result. (Each stream's certificate is verified on its own, even when
two streams present the same one: agents hold one stream each, and the benchmark's streams,
all of one agent, must cost what 10,000 agents' would.)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

from hallmark.errors import HallmarkError

if TYPE_CHECKING:
    from issuance.agentapi.scoped import OrmThreads
    from issuance.agentapi.servicer import AgentPeer
    from tenants.models import Tenant

# How long a re-check waits for others of its tenant to share its database call.
RECHECK_WINDOW_SECONDS = 0.5
MAX_BATCH = 500  # streams re-checked in one database call


class AgentRechecks:
    """Batches re-checks per tenant; `await check(peer)` raises what the single check would."""

    def __init__(
        self, threads: OrmThreads, *, window: float = RECHECK_WINDOW_SECONDS, batch: int = MAX_BATCH
    ) -> None:
        self._threads = threads
        self._window = window
        self._batch = batch
        self._pending: dict[uuid.UUID, list[tuple[bytes | None, asyncio.Future[None]]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self.calls = 0  # database calls made, for operators and tests

    async def check(self, peer: AgentPeer) -> None:
        loop = asyncio.get_running_loop()
        pending = self._pending.get(peer.tenant_id)
        if pending is None:
            pending = self._pending[peer.tenant_id] = []
            loop.call_later(self._window, self._flush, peer.tenant_id)
        future: asyncio.Future[None] = loop.create_future()
        future.add_done_callback(_retrieved)  # the stream may be gone by then
        pending.append((peer.certificate_der, future))
        # Shielded: a stream cancelled meanwhile leaves the batch as it is.
        await asyncio.shield(future)

    def _flush(self, tenant_id: uuid.UUID) -> None:
        waiting = self._pending.pop(tenant_id, [])
        for start in range(0, len(waiting), self._batch):
            task = asyncio.get_running_loop().create_task(
                self._check_batch(tenant_id, waiting[start : start + self._batch])
            )
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _check_batch(
        self, tenant_id: uuid.UUID, waiting: list[tuple[bytes | None, asyncio.Future[None]]]
    ) -> None:
        from cryptography import x509

        certificates = [x509.load_der_x509_certificate(der) if der else None for der, _ in waiting]

        def run(tenant: Tenant) -> list[Any]:
            from issuance import services

            return services.authenticate_agents(certificates, tenant_read_now=tenant)

        self.calls += 1
        try:
            results = await self._threads.in_tenant_schema(tenant_id, run)
        except Exception as exc:  # the tenant vanished, the database failed: all of them
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(waiting, results, strict=True):
            if future.done():
                continue
            if isinstance(result, HallmarkError):
                future.set_exception(result)
            else:
                future.set_result(None)

    async def close(self) -> None:
        for task in list(self._flushes):
            task.cancel()
        for task in list(self._flushes):
            with contextlib.suppress(BaseException):
                await task


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
