"""Change events for agents: published to Redis after commit, heard by every agent-API replica.

Whatever changes what an agent should hold (entries, the bundle, a federated bundle) calls
`publish_change` inside its transaction; the event goes out only if the transaction commits.
Each agent-API process keeps one pattern subscription and fans events out to the agents it
serves, so a change reaches agents connected to any replica.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger(__name__)
CHANNEL = "hallmark:tenant:{tenant_id}:changes"
PATTERN = "hallmark:tenant:*:changes"
KINDS = frozenset({"entries", "bundle", "federation", "agents"})

# Sent (in the caller's transaction) for every change published: apps that must carry a change
# further (managed federation tells the peers' agents of a bundle change) listen to it.
change_published = Signal()

_client: redis.Redis | None = None
_client_lock = threading.Lock()


@dataclass(frozen=True)
class ChangeEvent:
    """Something about a tenant changed; `kind` says what."""

    tenant_id: uuid.UUID
    kind: str
    at: float
    # For "entries": the tenant's entry revision the change committed, when the publisher
    # knew it. A listener can then tell agents the new head without reading it back.
    revision: int | None = None


def shared_redis() -> redis.Redis:
    """This process's Redis client (change events, the bundle cache)."""
    global _client  # noqa: PLW0603 - one connection pool per process
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
            )
        return _client


def publish_change(*, tenant_id: uuid.UUID | str, kind: str, revision: int | None = None) -> None:
    """Announce a change once the surrounding transaction commits (at once outside one).

    `revision`: the entry revision the transaction commits (kind "entries" only), when known.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown change kind {kind!r}; one of {sorted(KINDS)}")
    if revision is not None and kind != "entries":
        raise ValueError("only an entries change carries a revision")
    channel = CHANNEL.format(tenant_id=tenant_id)
    body: dict[str, object] = {"kind": kind, "at": time.time()}
    if revision is not None:
        body["revision"] = int(revision)
    payload = json.dumps(body)

    def send() -> None:
        try:
            shared_redis().publish(channel, payload)
        except redis.RedisError:
            # Agents also resync periodically: a lost event delays, it does not lose data.
            log.warning("could not publish %s change for tenant %s", kind, tenant_id)

    transaction.on_commit(send)
    change_published.send(sender=publish_change, tenant_id=tenant_id, kind=kind)


async def listen() -> AsyncIterator[ChangeEvent]:
    """All tenants' change events, as they come (reconnecting after Redis restarts)."""
    while True:
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(PATTERN)
            async for message in pubsub.listen():
                if message.get("type") != "pmessage":
                    continue
                event = _parse(message["channel"], message["data"])
                if event is not None:
                    yield event
        except (redis.RedisError, OSError) as exc:
            log.warning("change listener lost Redis (%s); reconnecting", exc)
            await _sleep(1.0)
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception:  # closing a broken connection may fail too
                log.debug("closing the change listener failed", exc_info=True)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _parse(channel: bytes | str, data: bytes | str) -> ChangeEvent | None:
    name = channel.decode() if isinstance(channel, bytes) else channel
    try:
        tenant_id = uuid.UUID(name.split(":")[2])
        body = json.loads(data)
        revision = body.get("revision")
        return ChangeEvent(
            tenant_id=tenant_id,
            kind=str(body["kind"]),
            at=float(body["at"]),
            # Anything but a positive number is left out: the listener reads the head itself.
            revision=revision if type(revision) is int and revision > 0 else None,
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        log.warning("ignoring malformed change event on %s", name)
        return None
