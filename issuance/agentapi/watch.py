"""Push for WatchUpdates: one change listener per process, fanned out to local agent streams.

Every agent-API replica subscribes once to all tenants' change events (tenants.events) and
wakes the streams of the event's tenant only. A stream that is busy while more events come
sees them as one wake-up (kinds merged), so a burst of writes costs each agent a notice or
two, not one per write. What a notice carries (head revision, bundle sequence) is the same
for every agent of a tenant, so it is read once per tenant per burst, not once per stream; an
entries event that carries the revision it committed is not read back at all (the notice goes
out at once with that head, and the agent's own sync reads the entries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from tenants import events

log = logging.getLogger(__name__)
RESTART_DELAY_SECONDS = 1.0
READY_TIMEOUT_SECONDS = 10.0

Listen = Callable[[], AsyncIterator[events.ChangeEvent]]
Publish = Callable[[uuid.UUID], Awaitable[None]]
Listener = Callable[[events.ChangeEvent], None]


class Watcher:
    """One open WatchUpdates stream: the kinds of change heard since it last woke.

    A wait is one future and one timer, nothing more: asyncio.wait_for on an Event (a task,
    two futures, a timer and callbacks for every wake-up) was the largest share of an
    agent-API process's time in a fan-out to 5,000 streams (benchmarks/watch_streams.py).
    """

    def __init__(self, tenant_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self.kinds: set[str] = set()
        self.heard_at: float | None = None
        self._waiter: asyncio.Future[None] | None = None

    def notify(self, kind: str, at: float) -> None:
        self.kinds.add(kind)
        self.heard_at = at if self.heard_at is None else min(self.heard_at, at)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float) -> set[str]:
        """The kinds heard since the last call; an empty set when `timeout` passed first."""
        if not self.kinds:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        kinds, self.kinds, self.heard_at = self.kinds, set(), None
        return kinds


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass
class _TenantState:
    generation: int = 0
    computed: int = -1
    future: asyncio.Future[tuple[int, int]] | None = None
    # The highest entry revision an event carried: committed, so the head is at least this.
    pushed: int = 0
    watchers: set[Watcher] = field(default_factory=set)


class ChangeHub:
    """The process's change listener and the streams it wakes, by tenant."""

    def __init__(self, publish: Publish, listen: Listen = events.listen) -> None:
        self._publish = publish
        self._listen = listen
        self._tenants: dict[uuid.UUID, _TenantState] = {}
        self._task: asyncio.Task[None] | None = None
        self._probe: tuple[uuid.UUID, asyncio.Event] | None = None
        self._listeners: list[Listener] = []

    # -- the listener --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start listening; returns once an event of our own made the round trip (or timeout)."""
        if self._task is not None:
            return
        probe = (uuid.uuid4(), asyncio.Event())
        self._probe = probe
        self._task = asyncio.create_task(self._run(), name="agentapi-change-listener")
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not probe[1].is_set() and time.monotonic() < deadline:
            # Until the subscription is live a publish is lost, so publish until one arrives.
            await self._publish(probe[0])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe[1].wait(), 0.2)
        if not probe[1].is_set():
            log.warning("change events not heard back from Redis; agents fall back to polling")
        self._probe = None

    def on_event(self, listener: Listener) -> None:
        """Also hand every tenant's events to `listener` (on the event loop; must not block)."""
        self._listeners.append(listener)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                async for event in self._listen():
                    self.dispatch(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("change listener failed; restarting")
            await asyncio.sleep(RESTART_DELAY_SECONDS)

    def dispatch(self, event: events.ChangeEvent) -> None:
        """Wake the streams of the event's tenant (and nobody else's)."""
        if self._probe is not None and event.tenant_id == self._probe[0]:
            self._probe[1].set()
            return
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("change listener %r failed on %s", listener, event)
        state = self._tenants.get(event.tenant_id)
        if state is None:
            return
        if event.kind == "entries" and event.revision is not None:
            state.pushed = max(state.pushed, event.revision)  # no read back needed
        else:
            state.generation += 1
        for watcher in state.watchers:
            watcher.notify(event.kind, event.at)

    # -- streams -------------------------------------------------------------------------------
    def subscribe(self, tenant_id: uuid.UUID) -> Watcher:
        watcher = Watcher(tenant_id)
        self._tenants.setdefault(tenant_id, _TenantState()).watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        state = self._tenants.get(watcher.tenant_id)
        if state is None:
            return
        state.watchers.discard(watcher)
        if not state.watchers:
            del self._tenants[watcher.tenant_id]

    async def revisions(
        self, tenant_id: uuid.UUID, read: Callable[[], Awaitable[tuple[int, int]]]
    ) -> tuple[int, int]:
        """(entries revision, bundle sequence) of the tenant, read once per burst of events."""
        state = self._tenants.get(tenant_id)
        if state is None:
            return await read()
        future = state.future
        failed = (
            future is not None
            and future.done()
            and (future.cancelled() or future.exception() is not None)
        )
        if future is None or failed or state.computed != state.generation:
            state.computed = state.generation
            future = state.future = asyncio.ensure_future(read())
        head, sequence = await asyncio.shield(future)
        return max(head, state.pushed), sequence

    def watching(self, tenant_id: uuid.UUID) -> int:
        state = self._tenants.get(tenant_id)
        return len(state.watchers) if state else 0
