"""Synchronous ORM work for the agent API: worker threads, each call in one tenant's schema."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import close_old_connections, connection, connections

from config import tracing
from issuance.errors import AgentNotAuthenticated
from tenants.scoping import get_tenant, tenant_schema

if TYPE_CHECKING:
    from tenants.models import Tenant

T = TypeVar("T")
CLOSE_TIMEOUT_SECONDS = 10.0


def run_in_tenant_schema(tenant_id: uuid.UUID, work: Callable[[Tenant], T]) -> T:
    """Call `work(tenant)` with this thread's connection in the tenant's schema, then reset it.

    Django connections are per thread, so every call switches the schema itself and puts the
    connection back in `public` afterwards, whatever thread of the pool it lands on.
    """
    from tenants.models import Tenant

    close_old_connections()
    try:
        try:
            tenant = get_tenant(tenant_id)
        except Tenant.DoesNotExist:
            raise AgentNotAuthenticated(
                "the trust domain no longer exists", code="unknown_trust_domain"
            ) from None
        with tenant_schema(tenant):
            return work(tenant)
    finally:
        with contextlib.suppress(Exception):
            connection.set_schema_to_public()


def _close_thread_connections(barrier: threading.Barrier) -> None:
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    connections.close_all()


def _in_trace_context(work: Callable[[Tenant], T], context: Any) -> Callable[[Tenant], T]:
    def traced(tenant: Tenant) -> T:
        with tracing.attached(context):
            return work(tenant)

    return traced


class OrmThreads:
    """A fixed pool of threads for ORM calls; each keeps its own database connection.

    `loop.run_in_executor` (unlike `asyncio.to_thread`) does not copy the caller's context,
    so a thread's Django connection is reused across calls and closed by `close()`.
    """

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name
        )

    async def in_tenant_schema(self, tenant_id: uuid.UUID, work: Callable[[Tenant], T]) -> T:
        loop = asyncio.get_running_loop()
        if tracing.enabled():  # the call's span goes with the work, and nothing else does
            work = _in_trace_context(work, tracing.current_context())
        return await loop.run_in_executor(self._executor, run_in_tenant_schema, tenant_id, work)

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        """Close every worker's database connection, then stop the threads."""
        barrier = threading.Barrier(self.workers, timeout=CLOSE_TIMEOUT_SECONDS)
        closing = [
            self._executor.submit(_close_thread_connections, barrier) for _ in range(self.workers)
        ]
        concurrent.futures.wait(closing, timeout=CLOSE_TIMEOUT_SECONDS * 2)
        self._executor.shutdown(wait=True, cancel_futures=True)
