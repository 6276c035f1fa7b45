"""Bounded bookkeeping for the agent API's public edge: what strangers can make it remember.

Everything here has a fixed upper size and forgets by age, so a flood of new names or
addresses costs memory up to the bound and no more: a TTL set of names known not to be
tenants, a back-off per tenant whose credentials cannot be built, and a per-source counter
of failed attestations whose audit rows are aggregated per source and time window.

The failure count that decides the limit is kept in Redis, so every agent-API process on
the port counts against one limit. If Redis cannot be reached, each process falls back to
its own count (the limit then holds per process, N processes allowing up to N times it) and
logs it: refusing every attestation while Redis is down would take the identity service
down with it, and the per-process count still bounds a flood.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis

Clock = Callable[[], float]
A = TypeVar("A")
log = logging.getLogger(__name__)


class ExpiringSet:
    """Up to `max_size` keys, each forgotten `ttl` seconds after it was added (LRU beyond)."""

    def __init__(self, *, max_size: int, ttl: float, clock: Clock = time.monotonic) -> None:
        self.max_size, self.ttl, self._clock = max_size, ttl, clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str) -> None:
        self._until[key] = self._clock() + self.ttl
        self._until.move_to_end(key)
        while len(self._until) > self.max_size:
            self._until.popitem(last=False)  # the oldest entry goes, never the whole set

    def discard(self, key: str) -> None:
        self._until.pop(key, None)

    def __contains__(self, key: object) -> bool:
        until = self._until.get(key) if isinstance(key, str) else None
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[key]  # type: ignore[arg-type]
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)


class TokenBucket:
    """At most `burst` at once and `rate` a second after that (`take` says whether one may)."""

    def __init__(self, *, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = burst, clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass
class _Failing:
    until: float
    delay: float
    failures: int


class Backoff:
    """Exponential back-off per key after failures (first `base`, doubling up to `cap`)."""

    def __init__(
        self, *, base: float, cap: float, max_size: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        self.base, self.cap, self.max_size, self._clock = base, cap, max_size, clock
        self._failing: OrderedDict[str, _Failing] = OrderedDict()

    def waiting(self, key: str) -> bool:
        """Whether `key` failed recently and must not be tried yet."""
        failing = self._failing.get(key)
        return failing is not None and self._clock() < failing.until

    def failed(self, key: str) -> int:
        """Record a failure; returns how many in a row (1 = it just started failing)."""
        previous = self._failing.pop(key, None)
        delay = self.base if previous is None else min(previous.delay * 2, self.cap)
        count = 1 if previous is None else previous.failures + 1
        self._failing[key] = _Failing(self._clock() + delay, delay, count)
        while len(self._failing) > self.max_size:
            self._failing.popitem(last=False)
        return count

    def succeeded(self, key: str) -> None:
        self._failing.pop(key, None)


@dataclass
class FailureWindow:
    """Failed attestations of one source at one tenant in one time window."""

    tenant_id: uuid.UUID
    source: str
    started: float  # wall-clock seconds, for the audit row
    count: int = 0
    logged: int = 0  # how many of them already have their own audit row
    codes: dict[str, int] = field(default_factory=dict)
    connections_refused: int = 0  # new connections closed at accept while it was over the limit

    @property
    def unrecorded(self) -> bool:
        """Whether anything of it still needs the aggregated audit row."""
        return self.count > self.logged or self.connections_refused > 0


# INCR and set the expiry on the first failure of a window, in one round trip (a fixed
# window, as tenants/ratelimit.py counts signups); a key left without expiry gets one.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""


class SharedFailureCount:
    """Failed attestations per source in Redis: one count for every agent-API process.

    `hallmark:attest-failures:<source>` lives for one window from the source's first failure.
    After a Redis error it is not asked again for a back-off (1 s doubling to 30 s), so an
    outage costs each attestation nothing while the caller falls back to its own count.
    """

    KEY = "hallmark:attest-failures:{source}"

    def __init__(self, client: Callable[[], redis.Redis], *, window: float) -> None:
        self._client, self.window = client, max(1, int(window))
        self._down = Backoff(base=1.0, cap=30.0, max_size=1)
        self._unreachable = False

    def count(self, source: str) -> int | None:
        """Failures of `source` in its current window; None when Redis cannot say."""
        return self._ask(lambda r: int(r.get(self.KEY.format(source=source)) or 0))

    def count_and_left(self, source: str) -> tuple[int, float] | None:
        """Failures of `source` in its window and the seconds left in it (one round trip);
        None when Redis cannot say."""
        key = self.KEY.format(source=source)

        def ask(r: redis.Redis) -> tuple[int, float]:
            pipe = r.pipeline(transaction=False)
            pipe.get(key)
            pipe.ttl(key)
            count, ttl = pipe.execute()
            return int(count or 0), float(ttl if ttl and ttl > 0 else self.window)

        return self._ask(ask)

    def add(self, source: str) -> int | None:
        """Count one failure; the count in this window, or None when Redis cannot say."""
        key = self.KEY.format(source=source)
        return self._ask(lambda r: int(r.eval(_HIT, 1, key, self.window)))

    def _ask(self, call: Callable[[redis.Redis], A]) -> A | None:
        if self._down.waiting("redis"):
            return None
        try:
            answer = call(self._client())
        except redis.RedisError as exc:
            self._unreachable = True
            if self._down.failed("redis") == 1:
                log.warning(
                    "attestation failure limit: Redis unreachable (%s); each agent-API "
                    "process counts on its own until it is back",
                    exc,
                )
            return None
        if self._unreachable:
            self._unreachable = False
            log.warning("attestation failure limit: Redis is back; counting shared again")
            self._down.succeeded("redis")
        return answer


class AttestationFailures:
    """Per-source limit on failed attestations, and their audit rows aggregated per window.

    A source (IPv4 address or IPv6 /64) with `limit` failures in the current window is
    refused until the window ends, before any database work; its new connections are closed
    at accept, before the TLS handshake (`refuses_connection`, asked by the relay), and
    counted into the audit aggregate of the tenant it last failed at. The count is `shared` by every
    agent-API process when a shared counter is given and reachable; this process's own count
    is always kept too and is what holds when it is not (see the module docstring). Per tenant
    and source, the first failure of a window gets its own audit row (who, what code, at
    once); the rest of that window are counted and written by this process as one row with
    the count when the window is flushed. Memory is bounded by `max_sources`.

    `blocked` and `failed` may ask Redis: call them off the event loop.
    """

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        shared: SharedFailureCount | None = None,
        max_sources: int = 65_536,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.limit, self.window, self.max_sources = limit, window, max_sources
        self.shared = shared
        self._clock, self._wall = clock, wall_clock
        self._sources: OrderedDict[str, tuple[float, int]] = OrderedDict()  # start, failures
        # sources over the limit: until when (monotonic), and the tenant they last failed at
        self._over: OrderedDict[str, tuple[float, uuid.UUID | None]] = OrderedDict()
        self._windows: dict[tuple[uuid.UUID, str], FailureWindow] = {}
        self._lock = threading.Lock()  # the event loop asks; ORM worker threads count

    def blocked(self, source: str) -> bool:
        """Whether `source` used up its failures in this window (in any process)."""
        if self._locally_blocked(source):
            return True
        shared = self.shared.count_and_left(source) if self.shared is not None else None
        if shared is None or shared[0] < self.limit:
            return False
        with self._lock:  # known here now: its connections are refused at accept too
            self._mark_over(source, self._clock() + shared[1], None)
        return True

    def refuses_connection(self, source: str) -> bool:
        """Whether a new connection from `source` is to be closed at accept: it is over the
        limit for the rest of its window, as this process knows (never asks Redis: callable
        on the event loop, for every accepted connection). A refusal is counted into the
        audit aggregate of the tenant the source last failed at."""
        if not self._over:
            return False
        with self._lock:
            over = self._over.get(source)
            if over is None:
                return False
            until, tenant_id = over
            if self._clock() >= until:
                del self._over[source]
                return False
            if tenant_id is not None:
                window = self._window(tenant_id, source)
                if window is not None:
                    window.connections_refused += 1
            return True

    def _mark_over(self, source: str, until: float, tenant_id: uuid.UUID | None) -> None:
        previous = self._over.pop(source, None)
        if tenant_id is None and previous is not None:
            tenant_id = previous[1]
        self._over[source] = (until, tenant_id)
        while len(self._over) > self.max_sources:
            self._over.popitem(last=False)

    def blocked_here(self, source: str) -> bool:
        """Whether this process's own count has `source` over the limit (never asks Redis:
        callable on the event loop). `blocked` also asks the shared count."""
        return self._locally_blocked(source)

    def _locally_blocked(self, source: str) -> bool:
        with self._lock:
            entry = self._sources.get(source)
        if entry is None or self._clock() - entry[0] >= self.window:
            return False
        return entry[1] >= self.limit

    def failed(
        self, tenant_id: uuid.UUID, source: str, code: str, *, refused: bool = False
    ) -> bool:
        """Count a failure (or a `refused` attempt, which the shared count need not see: the
        source is over the limit already); True when it should get an audit row of its own."""
        if self.shared is not None and not refused:
            self.shared.add(source)
        with self._lock:
            return self._count(tenant_id, source, code)

    def _count(self, tenant_id: uuid.UUID, source: str, code: str) -> bool:
        now = self._clock()
        start, failures = self._sources.pop(source, (now, 0))
        if now - start >= self.window:
            start, failures = now, 0
        self._sources[source] = (start, failures + 1)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        if failures + 1 >= self.limit:
            self._mark_over(source, start + self.window, tenant_id)
        elif source in self._over:
            self._mark_over(source, self._over[source][0], tenant_id)
        current = self._window(tenant_id, source)
        if current is None:
            return False  # counted for the limit; the audit aggregate is full until flushed
        current.count += 1
        current.codes[code] = current.codes.get(code, 0) + 1
        if current.logged == 0:
            current.logged = 1
            return True
        return False

    def _window(self, tenant_id: uuid.UUID, source: str) -> FailureWindow | None:
        """The open audit window of (tenant, source), made if there is room (lock held)."""
        key = (tenant_id, source)
        current = self._windows.get(key)
        if current is None:
            if len(self._windows) >= self.max_sources:
                return None
            current = self._windows[key] = FailureWindow(tenant_id, source, self._wall())
        return current

    def due(self, *, everything: bool = False) -> list[FailureWindow]:
        """Windows that ended (all of them with `everything`), removed from the table; only
        those with failures that have no audit row yet are returned."""
        now = self._wall()
        with self._lock:
            return self._take_due(now, everything)

    def _take_due(self, now: float, everything: bool) -> list[FailureWindow]:
        ended = [
            key for key, w in self._windows.items() if everything or now - w.started >= self.window
        ]
        windows = [self._windows.pop(key) for key in ended]
        return [w for w in windows if w.unrecorded]
