"""The hot path: counting in Redis, one round trip per call, never a database write.

Every count lands in one Redis hash (`LIVE`), field `<tenant id>|<UTC date>|<metric>`, by
HINCRBY. The roll-up (tenants.metering.rollup) claims the whole hash at once with RENAME, so
a count made during a roll-up lands in the next one. A per-tenant monthly SVID counter
(`MONTH`) answers the quota check at attestation without reading the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable

import redis

from tenants.events import shared_redis

log = logging.getLogger(__name__)

LIVE = "hallmark:metering:live"
CLAIMED_PREFIX = "hallmark:metering:claimed:"
MONTH = "hallmark:metering:month:{tenant_id}:{month}"
MONTH_TTL_SECONDS = 62 * 24 * 3600

X509_SVIDS = "x509_svids_issued"
JWT_SVIDS = "jwt_svids_issued"
API_CALLS = "api_calls"
COUNTERS = (X509_SVIDS, JWT_SVIDS, API_CALLS)
SVID_COUNTERS = (X509_SVIDS, JWT_SVIDS)

# Set False only by benchmarks/metering.py, to measure minting without metering in one run.
enabled = True


def today() -> dt.date:
    return dt.datetime.now(tz=dt.UTC).date()


def field_name(tenant_id: uuid.UUID | str, day: dt.date, metric: str) -> str:
    return f"{tenant_id}|{day.isoformat()}|{metric}"


def parse_field(name: bytes | str) -> tuple[str, dt.date, str] | None:
    text = name.decode() if isinstance(name, bytes) else name
    parts = text.split("|")
    if len(parts) != 3 or parts[2] not in COUNTERS:
        return None
    try:
        return parts[0], dt.date.fromisoformat(parts[1]), parts[2]
    except ValueError:
        return None


def count(
    tenant_id: uuid.UUID | str, metric: str, amount: int = 1, *, day: dt.date | None = None
) -> None:
    """Add `amount` to the tenant's counter for `day` (today, UTC): one Redis round trip.

    A Redis outage loses the count (logged) rather than refusing an SVID: an identity outage
    is worse than an unbilled SVID.
    """
    if amount <= 0 or not enabled:
        return
    if metric not in COUNTERS:
        raise ValueError(f"unknown metric {metric!r}")
    day = day or today()
    try:
        pipe = shared_redis().pipeline(transaction=False)
        pipe.hincrby(LIVE, field_name(tenant_id, day, metric), amount)
        if metric in SVID_COUNTERS:
            month_key = MONTH.format(tenant_id=tenant_id, month=day.strftime("%Y-%m"))
            pipe.incrby(month_key, amount)
            pipe.expire(month_key, MONTH_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError:
        log.warning("could not count %s %s for tenant %s", amount, metric, tenant_id)


def svids_this_month(tenant_id: uuid.UUID | str, *, day: dt.date | None = None) -> int:
    """SVIDs (X.509 and JWT) issued to the tenant this UTC month, from the Redis counter."""
    day = day or today()
    value = shared_redis().get(MONTH.format(tenant_id=tenant_id, month=day.strftime("%Y-%m")))
    return int(value or 0)


def claimed_batches() -> list[str]:
    """Ids of batches claimed by a roll-up and not yet forgotten (stored or not)."""
    return sorted(
        k.decode()[len(CLAIMED_PREFIX) :]
        for k in shared_redis().scan_iter(match=CLAIMED_PREFIX + "*")
    )


def pending(
    tenant_ids: Iterable[str], *, batches: Iterable[str]
) -> dict[tuple[str, dt.date, str], int]:
    """Counts not yet in the database: the live hash and the given (unstored) claimed batches."""
    wanted = {str(t) for t in tenant_ids}
    client = shared_redis()
    matches = [f"{t}|*" for t in wanted] if len(wanted) <= 8 else ["*"]
    found: dict[tuple[str, dt.date, str], int] = {}
    for key in [LIVE, *(CLAIMED_PREFIX + b for b in batches)]:
        for match in matches:
            for name, value in client.hscan_iter(key, match=match):
                parsed = parse_field(name)
                if parsed is None or parsed[0] not in wanted:
                    continue
                found[parsed] = found.get(parsed, 0) + int(value)
    return found
