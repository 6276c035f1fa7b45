"""Rotation lag and bundle sequence age over every tenant, without a tenant in any label.

Each tenant's rotation (trustdomains.tasks) writes where its journals stand into Redis sorted
sets, the tenant id as member and a time as score: when each kind's active authority is due
to hand over to its successor, and when its bundle last got a new sequence. The sweep drops
tenants that no longer exist. A scrape (config.beatmetrics, in beat) reads only the lowest
score of each set: the platform's most overdue authority and its stalest bundle. Which
tenant that is, an operator finds with `hallmark` tooling, not in the metrics.

A tenant whose rotation keeps failing keeps its last scores, so its lag grows as time passes
the due point: exactly what the alert should see.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import redis

KINDS = ("x509", "jwt")
DUE_KEY = "hallmark:rotation:activation-due:{kind}"
BUNDLE_KEY = "hallmark:rotation:bundle-changed"


def report_keys() -> list[str]:
    return [DUE_KEY.format(kind=kind) for kind in KINDS] + [BUNDLE_KEY]


def record(
    client: redis.Redis,
    tenant_id: str,
    *,
    activation_points: dict[str, dt.datetime | None],
    bundle_changed_at: dt.datetime | None,
) -> None:
    """Remember where one tenant's journals stand after its rotation."""
    pipe = client.pipeline(transaction=False)
    for kind in KINDS:
        point = activation_points.get(kind)
        if point is not None:
            pipe.zadd(DUE_KEY.format(kind=kind), {tenant_id: point.timestamp()})
    if bundle_changed_at is not None:
        pipe.zadd(BUNDLE_KEY, {tenant_id: bundle_changed_at.timestamp()})
    pipe.execute()


def keep_only(client: redis.Redis, tenant_ids: Iterable[str]) -> int:
    """Forget tenants not in `tenant_ids` (deleted since); returns how many were forgotten."""
    wanted = set(tenant_ids)
    forgotten = 0
    for key in report_keys():
        members: list[bytes] = list(client.zrange(key, 0, -1))  # type: ignore[arg-type]
        gone = [m for m in members if m.decode() not in wanted]
        if gone:
            forgotten += int(client.zrem(key, *gone))
    return forgotten


@dataclass(frozen=True)
class Figures:
    """The gauges at `now`: seconds, 0 when nothing is overdue; None: no tenant reported."""

    rotation_lag: dict[str, float | None]
    bundle_sequence_age: float | None
    tenants: int


def figures(client: redis.Redis, now: dt.datetime) -> Figures:
    """The platform-wide figures: each set's lowest score against `now`."""
    pipe = client.pipeline(transaction=False)
    for key in report_keys():
        pipe.zrange(key, 0, 0, withscores=True)
    pipe.zcard(BUNDLE_KEY)
    *lowest, tenants = pipe.execute()
    at = now.timestamp()
    oldest = [float(found[0][1]) if found else None for found in lowest]
    lag = {
        kind: (max(0.0, at - point) if point is not None else None)
        for kind, point in zip(KINDS, oldest, strict=False)
    }
    changed = oldest[-1]
    return Figures(lag, (max(0.0, at - changed) if changed is not None else None), int(tenants))
