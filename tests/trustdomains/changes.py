"""Test helpers for rotation: a Redis listener on a tenant's change channel, journal readers."""

from __future__ import annotations

import datetime as dt
import json
import time

import redis
from django.conf import settings

from hallmark.x509svid import BACKDATE
from tenants.events import CHANNEL
from trustdomains.models import JwtAuthority, TrustDomain, X509Authority

HOUR = dt.timedelta(hours=1)


class ChangeListener:
    """A real redis-py subscription to one tenant's change channel."""

    def __init__(self, tenant_id) -> None:
        self._client = redis.Redis.from_url(settings.REDIS_URL)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(CHANNEL.format(tenant_id=tenant_id))
        self._pubsub.get_message(timeout=5)  # the subscription confirmation

    def kinds(self, wait: float) -> list[str]:
        found, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None:
                found.append(json.loads(message["data"])["kind"])
        return found

    def bodies(self, count: int, wait: float) -> list[dict]:
        """The next `count` events' bodies (fewer if `wait` seconds pass first)."""
        found: list[dict] = []
        deadline = time.monotonic() + wait
        while len(found) < count and time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None:
                found.append(json.loads(message["data"]))
        return found

    def close(self) -> None:
        self._pubsub.close()
        self._client.close()


def start_of(handle) -> dt.datetime:
    """When the tenant's first CA was made (its not_before is backdated by BACKDATE)."""
    with handle.schema():
        return X509Authority.objects.order_by("created_at").first().not_before + BACKDATE


def sequence(handle) -> int:
    with handle.schema():
        return TrustDomain.objects.get().bundle_sequence


def journal(handle, model=X509Authority) -> list[tuple[str, bool, bool]]:
    """(status, tainted, pruned) of each authority of the kind, oldest first."""
    with handle.schema():
        return [
            (a.status, a.tainted, a.pruned_at is not None)
            for a in model.objects.order_by("not_before", "created_at")
        ]


def statuses(handle, model=X509Authority) -> list[str]:
    return [status for status, _, pruned in journal(handle, model) if not pruned]


MODELS = {"x509": X509Authority, "jwt": JwtAuthority}
