"""Usage reads for the API and the console: per tenant and day, rolled up plus pending counts.

The console (and the REST views) call `tenant_usage` / `all_usage` / `parse_range`; nothing
here writes. Counters come from DailyUsage plus what Redis holds that is not stored yet, so a
figure is exact between roll-ups too; gauges come from the hourly samples.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import redis
from django.db import connection
from django.db.models import Max, Sum

from hallmark.errors import HallmarkError
from tenants.events import shared_redis
from tenants.metering import counters, rollup
from tenants.metering.models import DailyUsage, GaugeSample
from tenants.models import Tenant

MAX_DAYS = 366
DEFAULT_DAYS = 30
METRICS = (
    "agents_active",
    "agent_hours",
    "x509_svids_issued",
    "jwt_svids_issued",
    "entries",
    "federation_relationships",
    "api_calls",
)


class InvalidUsageQuery(HallmarkError):
    """A usage query with a bad date or range (400)."""

    code = "invalid_date"
    http_status = 400


def parse_range(
    start: str | None, end: str | None, *, today: dt.date | None = None
) -> tuple[dt.date, dt.date]:
    """`from`/`to` (YYYY-MM-DD, inclusive); by default the last 30 days up to today (UTC)."""
    today = today or counters.today()

    def day(value: str | None, name: str) -> dt.date | None:
        if value is None or value == "":
            return None
        try:
            return dt.date.fromisoformat(value) if len(value) == 10 else _bad(value, name)
        except ValueError:
            return _bad(value, name)

    last = day(end, "to") or today
    first = day(start, "from") or last - dt.timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidUsageQuery(f"from ({first}) is after to ({last})", code="invalid_range")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidUsageQuery(f"at most {MAX_DAYS} days a query", code="range_too_large")
    return first, last


def _bad(value: str, name: str) -> dt.date:
    raise InvalidUsageQuery(f"{name} must be a date YYYY-MM-DD; got {value[:40]!r}")


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def usage_by_day(
    tenant_ids: Iterable[str], first: dt.date, last: dt.date
) -> dict[str, dict[dt.date, dict[str, int]]]:
    """{tenant id: {date: {metric: value}}} for every day of the range (zeros included)."""
    ids = [str(t) for t in tenant_ids]
    connection.set_schema_to_public()
    table: dict[str, dict[dt.date, dict[str, int]]] = {
        t: {d: dict.fromkeys(METRICS, 0) for d in _days(first, last)} for t in ids
    }
    stored = DailyUsage.objects.filter(tenant_id__in=ids, date__gte=first, date__lte=last)
    for tenant_id, date, metric, value in stored.values_list(
        "tenant_id", "date", "metric", "value"
    ):
        table[str(tenant_id)][date][metric] += value
    batches = counters.claimed_batches()
    stored_already = rollup.stored_batches(batches)
    unstored = [b for b in batches if b not in stored_already]
    for (tenant_id, date, metric), value in counters.pending(ids, batches=unstored).items():
        if first <= date <= last:
            table[tenant_id][date][metric] += value
    start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    samples = GaugeSample.objects.filter(tenant_id__in=ids, hour__gte=start, hour__lt=end)
    for sample in samples.order_by("hour"):
        row = table[str(sample.tenant_id)][sample.hour.astimezone(dt.UTC).date()]
        row["agents_active"] = max(row["agents_active"], sample.agents_active)
        row["agent_hours"] += sample.agents_active
        row["entries"] = sample.entries  # the day's last sample
        row["federation_relationships"] = sample.federation_relationships
    return table


def totals_of(days: dict[dt.date, dict[str, int]]) -> dict[str, int]:
    """Counters and agent-hours add up; agents_active is the highest day; entries and
    relationships are the last day's."""
    rows = [days[d] for d in sorted(days)]
    summed = ("agent_hours", "x509_svids_issued", "jwt_svids_issued", "api_calls")
    totals = {m: sum(r[m] for r in rows) for m in summed}
    totals["agents_active"] = max((r["agents_active"] for r in rows), default=0)
    for gauge in ("entries", "federation_relationships"):
        totals[gauge] = rows[-1][gauge] if rows else 0
    return {m: totals[m] for m in METRICS}


def tenant_usage(tenant: Tenant, first: dt.date, last: dt.date) -> dict[str, Any]:
    """The DESIGN shape: `{plan, quotas, from, to, totals, days: [{date, ...}]}`."""
    from tenants.billing import services as billing

    days = usage_by_day([str(tenant.pk)], first, last)[str(tenant.pk)]
    return {
        "plan": billing.plan_name(tenant),
        "quotas": billing.effective_quotas(tenant),
        "from": first.isoformat(),
        "to": last.isoformat(),
        "totals": totals_of(days),
        "days": [{"date": d.isoformat(), **days[d]} for d in sorted(days)],
    }


def all_usage(first: dt.date, last: dt.date) -> dict[str, Any]:
    """Every tenant's usage per day (the operator's view)."""
    connection.set_schema_to_public()
    tenants = list(Tenant.objects.exclude(schema_name="public").order_by("created_at"))
    table = usage_by_day([str(t.pk) for t in tenants], first, last)
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "tenants": [
            {
                "tenant": {"id": str(t.pk), "slug": t.slug, "trust_domain": t.trust_domain},
                "plan": t.plan,
                "status": t.status,
                "totals": totals_of(table[str(t.pk)]),
                "days": [
                    {"date": d.isoformat(), **table[str(t.pk)][d]} for d in sorted(table[str(t.pk)])
                ],
            }
            for t in tenants
        ],
    }


def platform_summary(first: dt.date, last: dt.date) -> dict[str, Any]:
    """Every tenant's usage summed per day, and each tenant's totals: `all_usage`'s figures
    without a row per tenant and day in Python (the operator's page over 1,000 tenants).

    The same sources: stored counters plus what Redis holds unstored, and the hourly gauge
    samples (a day's agents are its highest sample, agent-hours add up, entries and
    relationships are the last day's last sample), aggregated in SQL.
    """

    connection.set_schema_to_public()
    tenants = list(
        Tenant.objects.exclude(schema_name="public")
        .order_by("created_at")
        .values("id", "slug", "trust_domain", "plan", "status")
    )
    ids = [str(t["id"]) for t in tenants]
    days = {d: dict.fromkeys(METRICS, 0) for d in _days(first, last)}
    totals = {t: dict.fromkeys(METRICS, 0) for t in ids}
    # every row belongs to a tenant (the foreign key cascades): no list of 1,000 ids to send
    stored = DailyUsage.objects.filter(date__gte=first, date__lte=last)
    for date, metric, value in stored.values_list("date", "metric").annotate(Sum("value")):
        days[date][metric] += value
    for tenant_id, metric, value in stored.values_list("tenant_id", "metric").annotate(
        Sum("value")
    ):
        if str(tenant_id) in totals:
            totals[str(tenant_id)][metric] += value
    batches = counters.claimed_batches()
    stored_already = rollup.stored_batches(batches)
    unstored = [b for b in batches if b not in stored_already]
    for (tenant_id, date, metric), value in counters.pending(ids, batches=unstored).items():
        if first <= date <= last:
            days[date][metric] += value
            totals[tenant_id][metric] += value
    start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    for tenant_id, peak, hours in (
        GaugeSample.objects.filter(hour__gte=start, hour__lt=end)
        .values_list("tenant_id")
        .annotate(Max("agents_active"), Sum("agents_active"))
    ):
        if str(tenant_id) in totals:
            totals[str(tenant_id)]["agents_active"] = peak
            totals[str(tenant_id)]["agent_hours"] = hours
    for date, peaks, hours in _gauge_days(start, end):
        days[date]["agents_active"] += peaks
        days[date]["agent_hours"] += hours
    last_day = GaugeSample.objects.filter(
        hour__gte=dt.datetime.combine(last, dt.time(), tzinfo=dt.UTC),
        hour__lt=end,
    ).order_by("hour")
    for tenant_id, entries, relationships in last_day.values_list(
        "tenant_id", "entries", "federation_relationships"
    ):
        if str(tenant_id) in totals:
            totals[str(tenant_id)]["entries"] = entries  # the last sample wins
            totals[str(tenant_id)]["federation_relationships"] = relationships
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "days": [{"date": d.isoformat(), **days[d]} for d in sorted(days)],
        "tenants": [
            {
                "tenant": {
                    "id": str(t["id"]),
                    "slug": t["slug"],
                    "trust_domain": t["trust_domain"],
                },
                "plan": t["plan"],
                "status": t["status"],
                "totals": totals[str(t["id"])],
            }
            for t in tenants
        ],
    }


def _gauge_days(start: dt.datetime, end: dt.datetime) -> list[tuple[dt.date, int, int]]:
    """Per UTC day over every tenant: the sum of each tenant's highest sample, and of all
    samples (agent-hours), in one query (an aggregate of a per-tenant aggregate)."""
    table = connection.ops.quote_name(GaugeSample._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT day, sum(peak), sum(hours) FROM ("  # noqa: S608 - the model's own table
            " SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date AS day,"
            f" max(agents_active) AS peak, sum(agents_active) AS hours FROM {table}"
            " WHERE hour >= %s AND hour < %s GROUP BY 1, 2) AS per_tenant GROUP BY day",
            [start, end],
        )
        return [(day, int(peaks), int(hours)) for day, peaks, hours in cursor.fetchall()]


def _month_range(year: int, month: int) -> tuple[dt.date, dt.date]:
    first = dt.date(year, month, 1)
    return first, (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)


def _month_counters(tenant: Tenant, first: dt.date, last: dt.date) -> dict[str, int]:
    rows = (
        DailyUsage.objects.filter(tenant=tenant, date__gte=first, date__lte=last)
        .values("metric")
        .annotate(total=Sum("value"))
    )
    return {r["metric"]: int(r["total"]) for r in rows}


def month_svids(tenant: Tenant, year: int, month: int) -> dict[str, int]:
    """X.509 and JWT SVIDs issued to the tenant in a month (stored figures; roll up first)."""
    first, last = _month_range(year, month)
    found = _month_counters(tenant, first, last)
    samples = GaugeSample.objects.filter(
        tenant=tenant,
        hour__gte=dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC),
        hour__lt=dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC),
    ).aggregate(agent_hours=Sum("agents_active"), agents=Max("agents_active"))
    return {
        "x509_svids_issued": found.get(counters.X509_SVIDS, 0),
        "jwt_svids_issued": found.get(counters.JWT_SVIDS, 0),
        "api_calls": found.get(counters.API_CALLS, 0),
        "agent_hours": int(samples["agent_hours"] or 0),
        "agents_active": int(samples["agents"] or 0),
    }


def svids_this_month(tenant: Tenant) -> int:
    """SVIDs issued to the tenant this UTC month: Redis's month counter, or the stored figures
    when they are higher (Redis restarted without its data) or Redis does not answer."""
    today = counters.today()
    # only the two SVID counters: this runs at each new agent's attestation, under the lock
    found = _month_counters(tenant, *_month_range(today.year, today.month))
    from_db = found.get(counters.X509_SVIDS, 0) + found.get(counters.JWT_SVIDS, 0)
    try:
        return max(counters.svids_this_month(tenant.pk, day=today), from_db)
    except redis.RedisError:
        return from_db


def svids_this_month_of(tenant_ids: list[str]) -> dict[str, int]:
    """`svids_this_month` for many tenants (the operator's list): one Redis MGET of their month
    counters and one aggregate query of the stored figures; the higher of the two each."""
    if not tenant_ids:
        return {}
    today = counters.today()
    first, last = _month_range(today.year, today.month)
    stored = (
        DailyUsage.objects.filter(
            tenant_id__in=tenant_ids,
            date__gte=first,
            date__lte=last,
            metric__in=(counters.X509_SVIDS, counters.JWT_SVIDS),
        )
        .values("tenant_id")
        .annotate(total=Sum("value"))
    )
    found = {str(r["tenant_id"]): int(r["total"]) for r in stored}
    month = today.strftime("%Y-%m")
    try:
        live = shared_redis().mget(
            [counters.MONTH.format(tenant_id=t, month=month) for t in tenant_ids]
        )
    except redis.RedisError:
        live = [None] * len(tenant_ids)
    return {t: max(found.get(t, 0), int(v or 0)) for t, v in zip(tenant_ids, live, strict=True)}


def count_svids(tenant_id: object, *, x509: int = 0, jwt: int = 0) -> None:
    """Called where SVIDs are minted: count them (Redis only)."""
    if x509:
        counters.count(str(tenant_id), counters.X509_SVIDS, x509)
    if jwt:
        counters.count(str(tenant_id), counters.JWT_SVIDS, jwt)


def count_api_call(tenant_id: object) -> None:
    counters.count(str(tenant_id), counters.API_CALLS)
