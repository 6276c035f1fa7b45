"""Rotation tasks: beat fans every tenant out in batches; each tenant rotates in its schema."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import redis
from celery import shared_task
from django.conf import settings

from config import metrics
from tenants.events import shared_redis
from tenants.scoping import all_tenant_ids, tenant_for_task, tenant_schema
from trustdomains import journal, rotationhealth

log = logging.getLogger(__name__)
DEFAULT_ROTATION_INTERVAL_SECONDS = 10.0


def rotation_interval() -> float:
    """Seconds between rotation sweeps (settings.ROTATION_INTERVAL_SECONDS, SPIRE: 10 s)."""
    return float(getattr(settings, "ROTATION_INTERVAL_SECONDS", DEFAULT_ROTATION_INTERVAL_SECONDS))


# Tenants a rotation task handles, and how long (in intervals) a sweep may stay unfinished
# before the next one runs anyway (its worker died, say).
ROTATION_BATCH = 100
SWEEP_STALE_INTERVALS = 6
SWEEP_PENDING_KEY = "hallmark:rotation:sweep-pending"
# When the last sweep was queued and when its last batch finished (the operators' health page).
SWEEP_LAST_KEY = "hallmark:rotation:last-sweep"

BEAT_SCHEDULE = {
    "trustdomains-rotate-all": {
        "task": "trustdomains.tasks.rotate_all",
        "schedule": rotation_interval(),
        # A sweep nobody ran before the next one is due is dropped, not queued up.
        "options": {"expires": rotation_interval()},
    },
}


@shared_task(name="trustdomains.tasks.rotate_all", ignore_result=True)
def rotate_all(at: float | None = None) -> int:
    """Queue every tenant's rotation in batches; returns how many tenants were queued.

    A thousand tenants are ten messages, not a thousand. The batches carry no expiry (a
    tenant is never skipped silently); instead, while any batch of the previous sweep is
    still queued or running, the next sweep is skipped and says so, so a sweep that takes
    longer than its interval shows in the logs (add workers) rather than piling up.
    """
    tenant_ids = [str(tenant_id) for tenant_id in all_tenant_ids()]
    rotationhealth.keep_only(shared_redis(), tenant_ids)  # deleted tenants leave the gauges
    batches = [
        tenant_ids[start : start + ROTATION_BATCH]
        for start in range(0, len(tenant_ids), ROTATION_BATCH)
    ]
    if not batches:
        metrics.ROTATION_SWEEPS.labels("empty").inc()
        return 0
    client = shared_redis()
    stale_after = max(int(rotation_interval() * SWEEP_STALE_INTERVALS), 1)
    if not client.set(SWEEP_PENDING_KEY, len(batches), nx=True, ex=stale_after):
        pending = client.get(SWEEP_PENDING_KEY)
        log.warning(
            "rotation sweep skipped: %s batch(es) of the previous sweep are still queued or "
            "running; the sweep takes longer than its %.0f s interval, so add Celery workers",
            pending.decode() if isinstance(pending, bytes) else pending,
            rotation_interval(),
        )
        metrics.ROTATION_SWEEPS.labels("skipped").inc()
        return 0
    metrics.ROTATION_SWEEPS.labels("queued").inc()
    client.hset(
        SWEEP_LAST_KEY,
        mapping={"queued_at": time.time(), "tenants": len(tenant_ids), "finished_at": ""},
    )
    for batch in batches:
        rotate_trust_domains.apply_async(args=(batch,), kwargs={"at": at})
    return len(tenant_ids)


@shared_task(name="trustdomains.tasks.rotate_trust_domains", ignore_result=True)
def rotate_trust_domains(tenant_ids: list[str], at: float | None = None) -> int:
    """Rotate a batch of tenants, each on its own: one that fails is logged (and tried again
    by the next sweep) and the others go on. Returns how many failed."""
    failed = 0
    try:
        for tenant_id in tenant_ids:
            try:
                rotate_trust_domain(tenant_id, at=at)
            except Exception:
                failed += 1
                log.exception("rotating tenant %s failed; the next sweep tries again", tenant_id)
    finally:
        client = shared_redis()
        if client.decr(SWEEP_PENDING_KEY) <= 0:
            client.delete(SWEEP_PENDING_KEY)
            client.hset(SWEEP_LAST_KEY, "finished_at", time.time())
    return failed


@shared_task(name="trustdomains.tasks.rotate_trust_domain", ignore_result=True)
def rotate_trust_domain(tenant_id: str | None, at: float | None = None) -> list[str]:
    """Rotate one tenant's X.509 and JWT journals inside its schema (idempotent, race-safe).

    `at` (epoch seconds) replaces the clock, for tests and for replaying a missed moment.
    Returns the changes made, as `kind:operation:authority id`.
    """
    tenant = tenant_for_task(tenant_id, "rotate_trust_domain")
    if tenant is None:
        log.info("tenant %s no longer exists; skipping its rotation", tenant_id)
        return []
    now = dt.datetime.fromtimestamp(at, tz=dt.UTC) if at is not None else None
    with tenant_schema(tenant):
        try:
            state = journal.rotate_with_state(now=now)
        except Exception:
            metrics.ROTATIONS.labels("failed").inc()  # its bundle publish rolled back with it
            raise
    _count_rotation(state.changes)
    _report_health(str(tenant.id), state)
    return [f"{c.kind}:{c.operation}:{c.authority_id}" for c in state.changes]


def _report_health(tenant_id: str, state: journal.RotationState) -> None:
    """Where the tenant's journals stand, for the rotation lag and bundle age gauges."""
    try:
        rotationhealth.record(
            shared_redis(),
            tenant_id,
            activation_points=state.activation_points,
            bundle_changed_at=state.bundle_changed_at,
        )
    except redis.RedisError:
        # The gauges go stale, and the rotation itself stands.
        log.warning("could not record tenant %s's rotation state in Redis", tenant_id)


def last_sweep() -> dict[str, float | int | None]:
    """The last queued sweep: when (epoch s), how many tenants, when its last batch finished
    (None while it runs), as the operators' health page shows it."""
    raw = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in shared_redis().hgetall(SWEEP_LAST_KEY).items()
    }
    if not raw.get("queued_at"):
        return {"queued_at": None, "tenants": 0, "finished_at": None}
    return {
        "queued_at": float(raw["queued_at"]),
        "tenants": int(raw.get("tenants") or 0),
        "finished_at": float(raw["finished_at"]) if raw.get("finished_at") else None,
    }


def _count_rotation(changes: list[Any]) -> None:
    metrics.ROTATIONS.labels("changed" if changes else "unchanged").inc()
    for change in changes:
        metrics.AUTHORITY_CHANGES.labels(change.kind, change.operation).inc()
    if changes:  # journal.rotate published them under one new bundle sequence
        metrics.BUNDLE_PUBLISHES.labels("published").inc()
