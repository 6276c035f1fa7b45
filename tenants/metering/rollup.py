"""The roll-up: Redis counters into the public schema, exactly once, in three steps.

1. `claim()` RENAMEs the live hash to `claimed:<batch id>` (atomic: a count made after it
   lands in a new live hash, none is lost or seen twice).
2. `store(batch)` adds the batch's counts to DailyUsage in one transaction that also inserts
   the RollupBatch row: a batch stored already (the row exists) adds nothing.
3. `forget(batch)` deletes the claimed hash.

A worker killed after 1 leaves the claimed hash for the next roll-up, which stores it; killed
after 2, the next roll-up finds the batch stored and only forgets it. Two roll-ups storing the
same batch at once meet on the RollupBatch primary key: one adds, the other adds nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid

import redis
from django.db import connection, transaction
from django.utils import timezone

from tenants.events import shared_redis
from tenants.metering import counters
from tenants.metering.models import DailyUsage, RollupBatch
from tenants.models import Tenant

# Stored batch ids are kept this long (a claimed hash older than that is not expected).
KEEP_BATCHES = dt.timedelta(days=30)


def claim() -> str | None:
    """Step 1: the live counters become a claimed batch; None when nothing was counted."""
    batch = uuid.uuid4().hex
    try:
        shared_redis().rename(counters.LIVE, counters.CLAIMED_PREFIX + batch)
    except redis.ResponseError:  # no live hash: nothing counted since the last roll-up
        return None
    return batch


def store(batch: str) -> bool:
    """Step 2: add the batch to DailyUsage once; False if it was stored before."""
    raw = shared_redis().hgetall(counters.CLAIMED_PREFIX + batch)
    totals: dict[tuple[str, dt.date, str], int] = {}
    for name, value in raw.items():
        parsed = counters.parse_field(name)
        if parsed is not None:
            totals[parsed] = totals.get(parsed, 0) + int(value)
    connection.set_schema_to_public()
    with transaction.atomic():
        _, created = RollupBatch.objects.get_or_create(
            batch_id=batch, defaults={"fields": len(totals)}
        )
        if not created:
            return False
        known = {
            str(t)
            for t in Tenant.objects.filter(pk__in={t for t, _, _ in totals}).values_list(
                "id", flat=True
            )
        }
        rows = [(t, d, m, v) for (t, d, m), v in totals.items() if t in known]
        if rows:
            table = DailyUsage._meta.db_table
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {table} (tenant_id, date, metric, value) "  # noqa: S608
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, date, metric) "
                    f"DO UPDATE SET value = {table}.value + EXCLUDED.value",
                    rows,
                )
    return True


def forget(batch: str) -> None:
    """Step 3: the claimed hash is gone (call only once the batch is stored)."""
    shared_redis().delete(counters.CLAIMED_PREFIX + batch)


def roll_up() -> int:
    """Leftover batches of a killed roll-up first, then the live counters; batches stored."""
    stored = 0
    for batch in counters.claimed_batches():
        stored += int(store(batch))
        forget(batch)
    claimed = claim()
    if claimed is not None:
        stored += int(store(claimed))
        forget(claimed)
    RollupBatch.objects.filter(applied_at__lt=timezone.now() - KEEP_BATCHES).delete()
    return stored


def stored_batches(batches: list[str]) -> set[str]:
    connection.set_schema_to_public()
    return set(RollupBatch.objects.filter(batch_id__in=batches).values_list("batch_id", flat=True))
