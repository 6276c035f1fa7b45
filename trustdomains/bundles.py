"""The published bundle, cached by its `spiffe_sequence` for every reader.

Every change to the published bundle bumps the trust domain's `bundle_sequence` in the
transaction that makes it (trustdomains.authorities, jwtauthorities, provisioning). After
that transaction commits, the changing process rebuilds the bundle and stores it here; it is
also announced to agents ("bundle" change events). Readers — the bundle endpoint, the REST
API, the agent API — read the sequence (one indexed row) and take the cached bundle of that
sequence: from this process's memory, else from Redis (shared by every replica), else they
build it from the journal and store it. A cache entry is only ever used for the sequence it
was built from, so a change can never be hidden by the cache, and Redis being down only
costs the rebuild.

A bundle built while the key manager could not create a missing JWT key is served but not
cached, so the complete one replaces it as soon as the key manager is back.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
from django.db import transaction

from hallmark.bundle import Bundle
from hallmark.errors import HallmarkError
from hallmark.spiffeid import TrustDomain as SpiffeTrustDomain
from tenants.events import publish_change, shared_redis
from tenants.scoping import tenant_schema

if TYPE_CHECKING:
    from tenants.models import Tenant

log = logging.getLogger(__name__)
CACHE_KEY = "hallmark:tenant:{tenant_id}:bundle"
CACHE_TTL_SECONDS = 7 * 24 * 3600
LOCAL_ENTRIES = 4096


class _LocalCache:
    """This process's newest bundle per tenant (bounded, least recently used goes first)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[uuid.UUID, Bundle] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant_id: uuid.UUID, sequence: int) -> Bundle | None:
        with self._lock:
            bundle = self._entries.get(tenant_id)
            if bundle is None or bundle.sequence != sequence:
                return None
            self._entries.move_to_end(tenant_id)
            return bundle

    def put(self, tenant_id: uuid.UUID, bundle: Bundle) -> None:
        with self._lock:
            held = self._entries.get(tenant_id)
            if held is not None and held.sequence > bundle.sequence:
                return
            self._entries[tenant_id] = bundle
            self._entries.move_to_end(tenant_id)
            while len(self._entries) > LOCAL_ENTRIES:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_local = _LocalCache()


def published(
    tenant: Tenant, trust_domain: str, sequence: int, build: Callable[[], tuple[Bundle, bool]]
) -> Bundle:
    """The bundle of `sequence`: cached, or built by `build` (→ bundle, complete) and stored."""
    bundle = _local.get(tenant.id, sequence)
    if bundle is not None:
        return bundle
    bundle = _from_redis(tenant.id, trust_domain, sequence)
    if bundle is not None:
        _local.put(tenant.id, bundle)
        return bundle
    bundle, complete = build()
    if complete:
        store(tenant.id, bundle)
    return bundle


def store(tenant_id: uuid.UUID, bundle: Bundle) -> None:
    """Keep `bundle` for readers here and on every replica (Redis keeps the newest)."""
    _local.put(tenant_id, bundle)
    try:
        shared_redis().set(
            CACHE_KEY.format(tenant_id=tenant_id), bundle.to_json(), ex=CACHE_TTL_SECONDS
        )
    except redis.RedisError as exc:
        log.debug("bundle of tenant %s not cached in Redis: %s", tenant_id, exc)


def announce_change(tenant: Tenant) -> None:
    """Call in the transaction that bumped the sequence: once it commits, rebuild and cache
    the bundle, then tell the agents (who fetch it from the cache)."""
    from trustdomains.services import build_bundle

    def rebuild() -> None:
        try:
            with tenant_schema(tenant):
                bundle, complete = build_bundle()
        except HallmarkError as exc:
            # Readers build it themselves: a failed rebuild only costs them that.
            log.warning("bundle of tenant %s not rebuilt after a change: %s", tenant.id, exc)
            return
        if complete:
            store(tenant.id, bundle)

    transaction.on_commit(rebuild)
    publish_change(tenant_id=tenant.id, kind="bundle")


def forget_local() -> None:
    """Drop this process's copies (tests, and after a fork)."""
    _local.clear()


def _from_redis(tenant_id: uuid.UUID, trust_domain: str, sequence: int) -> Bundle | None:
    try:
        document = shared_redis().get(CACHE_KEY.format(tenant_id=tenant_id))
    except redis.RedisError as exc:
        log.debug("bundle cache of tenant %s not read from Redis: %s", tenant_id, exc)
        return None
    if document is None:
        return None
    try:
        bundle = Bundle.parse(SpiffeTrustDomain(trust_domain), document)
    except HallmarkError as exc:
        log.warning("ignoring a bad cached bundle of tenant %s: %s", tenant_id, exc)
        return None
    return bundle if bundle.sequence == sequence else None
