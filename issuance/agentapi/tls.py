"""Per-tenant TLS for the agent API: SNI (= trust domain) picks the tenant's server SVID.

The SNI callback runs on the event loop inside every handshake, for anyone on the internet,
so it never waits for the database or the key manager: it answers from memory only.

- A directory of the platform's trust domains (name → tenant) is loaded when the server
  starts, reloaded every DIRECTORY_RELOAD_SECONDS, and learns a new tenant from the "bundle"
  event its provisioning announces. A tenant's credentials are built when a handshake first
  names it, as for every tenant after a restart: a signup then costs the agent API and the
  bundle endpoint one query each, not a key pair, a signature from the key manager and a
  key-manager token in every process while agents are being served (a burst of admitted
  signups slowed every tenant's syncs: benchmarks/abuse.py), and a tenant that never runs
  an agent or is never fetched by a federation peer costs them nothing.
- A name the directory lacks is looked up in the background (at most MAX_PENDING_LOOKUPS at
  a time, and LOOKUPS_PER_SECOND after a burst of as many: a flood of new names buys no more
  queries than that; a name dropped is looked up when its client retries); a name found
  absent is remembered in a bounded TTL set (LRU beyond MAX_UNKNOWN_NAMES). A tenant made
  since the directory was loaded is normally learnt from its "bundle" event, not a lookup.
- `admits` answers the relay's ClientHello peek (hallmark.relay): a name that is neither in
  the directory nor served is refused before any TLS object exists for the connection.
- Credentials are built and refreshed on worker threads (`tlsbuild`): renewed at half-life,
  at once when the authority that signed them is tainted or leaves the bundle. A tenant whose
  server SVID cannot be signed backs off exponentially (BUILD_BACKOFF_*): no retry and no
  log line per handshake, one traceback when it starts failing.

A handshake that names a tenant whose credentials are not built yet waits for them before
it starts: the agent API's relay and the bundle endpoint's listener ask `build_awaited` for
the build to wait for (half the handshake's time at most), so the first handshake of a
tenant succeeds, only later. A build that fails or does not end in time fails its
handshakes (an internal-error alert), and clients retry, as for any transient failure.
"""

from __future__ import annotations

import concurrent.futures
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable

from hallmark.errors import HallmarkError, InvalidTrustDomain
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import utcnow
from issuance.agentapi import tlsbuild
from issuance.agentapi.limits import Backoff, ExpiringSet, TokenBucket
from issuance.agentapi.scoped import OrmThreads
from issuance.agentapi.tlsbuild import (  # re-exported: the server and tests use them here
    SERVER_PATH,
    Credentials,
    TenantSSLContext,
    base_context,
)
from tenants.events import ChangeEvent

__all__ = ["SERVER_PATH", "TenantCredentials", "TenantSSLContext", "base_context"]
log = logging.getLogger(__name__)
ROOTS_REFRESH_SECONDS = 10.0
DIRECTORY_RELOAD_SECONDS = 60.0
UNKNOWN_NAME_CACHE_SECONDS = 30.0
MAX_UNKNOWN_NAMES = 10_000
MAX_PENDING_LOOKUPS = 32
LOOKUPS_PER_SECOND = 20.0
BUILD_BACKOFF_SECONDS = 1.0
BUILD_BACKOFF_MAX_SECONDS = 300.0
Build = Callable[[], Credentials | None]


class TenantCredentials:
    """The cache of per-tenant server contexts and the SNI callback that uses it."""

    def __init__(self, workers: int = 4, *, profile: str = tlsbuild.AGENT_API) -> None:
        self.profile = profile
        self._lock = threading.Lock()
        self._cache: dict[str, Credentials] = {}
        self._directory: dict[str, uuid.UUID] = {}
        self._reloaded = float("-inf")
        self._unknown = ExpiringSet(max_size=MAX_UNKNOWN_NAMES, ttl=UNKNOWN_NAME_CACHE_SECONDS)
        self._backoff = Backoff(base=BUILD_BACKOFF_SECONDS, cap=BUILD_BACKOFF_MAX_SECONDS)
        self._lookups: set[str] = set()
        self._lookup_budget = TokenBucket(rate=LOOKUPS_PER_SECOND, burst=LOOKUPS_PER_SECOND)
        # the builds and refreshes running, each done when it ends
        self._building: dict[str, concurrent.futures.Future[None]] = {}
        self._again: set[str] = set()  # changed while a refresh was running: refresh again
        self._threads = OrmThreads(workers, "agentapi-tls")

    def start(self) -> concurrent.futures.Future[None]:
        """Load the directory of trust domains on a worker thread (await it before serving)."""
        return self._threads.submit(self._reload_quietly)

    def close(self) -> None:
        self._threads.close()

    def admits(self, server_name: str) -> bool:
        """Whether a ClientHello naming `server_name` may go on to the full TLS handshake.

        Called by the relay on the event loop before TLS starts: a name of the directory or
        the cache goes on (the SNI callback then decides as always); any other is refused
        now, and looked up in the background as the SNI callback would.
        """
        name = server_name.lower()
        if name in self._cache or name in self._directory:  # dict reads: no lock needed
            return True
        return not isinstance(self.context_for(name), int)

    def build_awaited(self, server_name: str) -> concurrent.futures.Future[None] | None:
        """What a handshake naming `server_name` should wait for before it starts: the build
        of its tenant's credentials (queued now if it was not), when their absence is all
        that would fail it; None when there is nothing to wait for (they are served, or the
        name is refused or backing off whatever the wait). Called by the relay, on the event
        loop, for a name `admits` let through; the future is done when the build has ended,
        however it ended."""
        name = server_name.lower()
        try:
            context = self.context_for(name)
        except Exception:
            return None  # the SNI callback answers it (and logs why)
        if not isinstance(context, int):
            return None
        with self._lock:
            return self._building.get(name)

    def sni_callback(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        """Switch the handshake to the tenant named by SNI; never waits for I/O."""
        try:
            context = self.context_for(server_name or "")
        except Exception:
            log.exception("agent API: choosing TLS credentials for %r failed", server_name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        if isinstance(context, int):
            return context
        ssl_object.context = context
        return None

    def context_for(self, server_name: str) -> TenantSSLContext | int:
        """The tenant's context, or the TLS alert to answer now (and work queued for later)."""
        name = server_name.lower()
        try:
            TrustDomain(name)
        except InvalidTrustDomain:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        now = utcnow()
        with self._lock:
            cached = self._cache.get(name)
            if time.monotonic() - self._reloaded > DIRECTORY_RELOAD_SECONDS:
                self._reloaded = time.monotonic()  # one reload at a time
                self._threads.submit(self._reload_quietly)
            if cached is None or now >= cached.not_after:
                if name in self._unknown:
                    return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
                if self._backoff.waiting(name):
                    return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
                tenant_id = self._directory.get(name)
        if cached is not None and now < cached.not_after:
            if self._backing_off(name):
                return cached.context  # a failed renewal is retried after its back-off
            if now >= cached.renew_at:
                self._background(name, lambda: self._issue(cached.tenant_id))
            elif time.monotonic() - cached.roots_checked > ROOTS_REFRESH_SECONDS:
                self._background(name, lambda: tlsbuild.refresh(cached))
            return cached.context
        if tenant_id is not None:
            self._background(name, lambda: self._issue(tenant_id))
        else:
            self._lookup(name)
        return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR  # not ready yet: the agent retries

    def bundle_changed(self, event: ChangeEvent) -> None:
        """A tenant's bundle changed (provisioning, rotation, taint, revoke): refresh or learn
        its credentials now. Called on the event loop for every tenant's events; only queues.
        """
        if event.kind != "bundle":
            return
        with self._lock:
            names = [n for n, t in self._directory.items() if t == event.tenant_id]
        if not names:
            self._threads.submit(self._learn, event.tenant_id)
        for name in names:
            # Credentials not built are built with the event's change when first needed.
            if self._held_or_building(name):
                self._background(name, self._refresh_cached(name))

    def _held_or_building(self, name: str) -> bool:
        with self._lock:
            return name in self._cache or name in self._building

    def _issue(self, tenant_id: uuid.UUID) -> Credentials | None:
        if self.profile == tlsbuild.AGENT_API:
            return tlsbuild.issue(tenant_id)
        return tlsbuild.issue(tenant_id, self.profile)

    def _backing_off(self, name: str) -> bool:
        with self._lock:
            return self._backoff.waiting(name)

    # -- worker-thread side ------------------------------------------------------------------
    def _reload(self) -> None:
        directory = tlsbuild.tenant_directory()
        with self._lock:
            gone = set(self._directory) - set(directory)
            self._directory = directory
            self._reloaded = time.monotonic()
            for name in gone:
                self._cache.pop(name, None)

    def _reload_quietly(self) -> None:
        try:
            self._reload()
        except Exception as exc:  # the old directory serves on; the next handshake retries
            log.warning("agent API: reloading the trust domain directory failed: %s", exc)

    def _learn(self, tenant_id: uuid.UUID) -> None:
        try:
            found = tlsbuild.lookup_tenant(tenant_id=tenant_id)
        except Exception as exc:
            log.warning("agent API: looking up tenant %s failed: %s", tenant_id, exc)
            return
        if found is not None:
            self._known(*found, build=False)  # built when a handshake first names it

    def _known(self, name: str, tenant_id: uuid.UUID, *, build: bool = True) -> None:
        with self._lock:
            self._directory[name] = tenant_id
            self._unknown.discard(name)
        if build:
            self._background(name, lambda: self._issue(tenant_id))

    def _lookup(self, name: str) -> None:
        with self._lock:
            if (
                name in self._lookups
                or len(self._lookups) >= MAX_PENDING_LOOKUPS
                or not self._lookup_budget.take()
            ):
                return  # a busy edge drops lookups; the client's retry asks again
            self._lookups.add(name)

        def run() -> None:
            try:
                found = tlsbuild.lookup_tenant(trust_domain=name)
            except Exception as exc:
                log.warning("agent API: looking up trust domain %r failed: %s", name, exc)
                found = None
                with self._lock:
                    self._backoff.failed(name)
            else:
                if found is None:
                    with self._lock:
                        self._unknown.add(name)
            finally:
                with self._lock:
                    self._lookups.discard(name)
            if found is not None:
                self._known(*found)

        self._threads.submit(run)

    def _refresh_cached(self, name: str) -> Build:
        def build() -> Credentials | None:
            with self._lock:
                cached = self._cache.get(name)
                tenant_id = self._directory.get(name)
            if cached is not None:
                return tlsbuild.refresh(cached)
            return self._issue(tenant_id) if tenant_id is not None else None

        return build

    def _store(self, name: str, credentials: Credentials | None) -> None:
        with self._lock:
            self._backoff.succeeded(name)
            if credentials is None:  # the tenant is gone
                self._unknown.add(name)
                self._cache.pop(name, None)
                self._directory.pop(name, None)
            else:
                self._cache[name] = credentials

    def _failed(self, name: str, exc: Exception) -> None:
        with self._lock:
            in_a_row = self._backoff.failed(name)
        if isinstance(exc, HallmarkError):
            log.warning(
                "agent API: no TLS credentials for %s (%s, failure %d in a row): %s",
                name,
                exc.code,
                in_a_row,
                exc.detail,
            )
        elif in_a_row == 1:
            log.error("agent API: building TLS credentials of %s failed", name, exc_info=exc)
        else:
            log.warning(
                "agent API: building TLS credentials of %s failed again (%d in a row): %s",
                name,
                in_a_row,
                exc,
            )

    def _background(self, name: str, build: Build) -> None:
        with self._lock:
            if name in self._building:
                # The running refresh may have read the database before this change.
                self._again.add(name)
                return
            ended = self._building[name] = concurrent.futures.Future()

        def run() -> None:
            failed = False
            try:
                self._store(name, build())
            except Exception as exc:
                failed = True
                self._failed(name, exc)
            finally:
                with self._lock:
                    del self._building[name]
                    again = name in self._again and not failed
                    self._again.discard(name)
                if not ended.cancelled():
                    ended.set_result(None)
            if again:
                self._background(name, self._refresh_cached(name))

        self._threads.submit(run)
