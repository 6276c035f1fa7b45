"""The federation refresh sweep with many tenants and few relationships due, before and after the
public refresh index.

Prints, from one run on one machine (its own embedded servers in a temporary data dir, or the
external ones named by HALLMARK_*_URL): with `--tenants` tenants (schemas cloned from the
template, as a signup makes them, each with one https_web relationship) of which `--due` have
their relationship due, the time of one sweep as beat's task runs it, over `--runs` runs
(min / median / max), and its database statements:
  before: the sweep as it was, visiting every tenant schema for its due relationships;
  after: `federation.tasks.refresh_due`, one claim of the due rows from the refresh index.
Both queue the same refresh tasks on the same Redis broker (no worker runs them: the queue is
what a sweep produces). Run: `.venv/bin/python -m benchmarks.federation_sweep [--tenants 1000]
[--due 10] [--runs 5]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks.tenants import _setup


def _make_tenants(count: int, due: int) -> None:
    """Tenants with a cloned schema and one relationship each; the first `due` are due now."""
    from django.db import connection, transaction
    from django.utils import timezone

    from federation.models import FederationRelationship
    from tenants import schemas
    from tenants.migrating import code_fingerprint
    from tenants.models import Tenant
    from tenants.scoping import tenant_schema

    schemas.ensure_template()
    fingerprint, now = code_fingerprint(), timezone.now()
    started = time.perf_counter()
    for number in range(count):
        tenant_id = uuid.uuid4()
        with transaction.atomic():
            connection.set_schema_to_public()
            tenant = Tenant.objects.create(
                id=tenant_id,
                schema_name=f"t_{tenant_id.hex}",
                slug=f"sweep-{tenant_id.hex[:12]}",
                name=f"sweep {number}",
                trust_domain=f"sweep-{tenant_id.hex[:12]}.bench.test",
                migrated_to=fingerprint,
            )
            schemas.create_tenant_schema(tenant.schema_name)
            with tenant_schema(tenant):
                FederationRelationship.objects.create(
                    trust_domain=f"peer-{number}.bench.test",
                    bundle_endpoint_url=f"https://peer-{number}.bench.test/bundle",
                    next_refresh_at=now - dt.timedelta(seconds=1)
                    if number < due
                    else now + dt.timedelta(days=1),
                )
        if (number + 1) % 200 == 0:
            print(f"  {number + 1}/{count} tenants made", flush=True)
    connection.set_schema_to_public()
    print(f"  made {count} tenants in {time.perf_counter() - started:.0f}s", flush=True)


def _sweep_visiting_every_schema() -> int:
    """The sweep before the index (federation/tasks.py until this change), for comparison."""
    from django.db.models import Q
    from django.utils import timezone

    from federation.models import FETCHED_PROFILES, FederationRelationship
    from federation.tasks import refresh_relationship, sweep_interval
    from tenants.scoping import all_tenants, tenant_schema

    queued = 0
    for tenant in all_tenants():
        with tenant_schema(tenant):
            due = list(
                FederationRelationship.objects.filter(bundle_endpoint_profile__in=FETCHED_PROFILES)
                .exclude(bundle_endpoint_url="")
                .filter(Q(next_refresh_at__isnull=True) | Q(next_refresh_at__lte=timezone.now()))
                .values_list("trust_domain", flat=True)
            )
        for trust_domain in due:
            refresh_relationship.apply_async(
                args=(str(tenant.pk), trust_domain), expires=sweep_interval() * 6
            )
            queued += 1
    return queued


def _release_leases() -> None:
    """Between runs: the index sweep's leases would otherwise hide the due rows."""
    from federation.schedule.models import ScheduledRefresh

    ScheduledRefresh.objects.update(queued_until=None)


def _measure(sweep: Callable[[], int], runs: int) -> tuple[list[float], int, int]:
    """Times of `runs` sweeps, what the last queued, and its SQL statements (search_path
    changes included: each is a round trip)."""
    from django.db import connection

    times, queued, executed = [], 0, [0]

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        executed[0] += 1
        return execute(sql, params, many, context)

    for _ in range(runs):
        _release_leases()
        connection.set_schema_to_public()
        executed[0] = 0
        with connection.execute_wrapper(count):
            started = time.perf_counter()
            queued = sweep()
            times.append(time.perf_counter() - started)
    return times, queued, executed[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--due", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="hallmark-bench-sweep-"))
    print(f"data dir {data_dir}", flush=True)
    _setup(data_dir)
    from federation.tasks import refresh_due
    from tenants.scoping import all_tenant_ids

    existing = len(all_tenant_ids())
    if existing:  # a data dir of an earlier run (--data-dir): its tenants are measured again
        print(f"  {existing} tenants exist; none made", flush=True)
        args.tenants = existing
    else:
        _make_tenants(args.tenants, args.due)
    _measure(refresh_due, 1)  # warm both paths' caches (connections, the broker)
    _measure(_sweep_visiting_every_schema, 1)
    rows = [
        ("before: visit every schema", *_measure(_sweep_visiting_every_schema, args.runs)),
        ("after: ask the refresh index", *_measure(refresh_due, args.runs)),
    ]
    print(f"\none sweep, {args.tenants} tenants, {args.due} relationships due ({args.runs} runs)")
    print(f"{'sweep':>30} | {'min':>8} | {'median':>8} | {'max':>8} | queued | statements")
    for label, times, queued, statements in rows:
        print(
            f"{label:>30} | {min(times) * 1000:6.1f}ms | {statistics.median(times) * 1000:6.1f}ms"
            f" | {max(times) * 1000:6.1f}ms | {queued:>6} | {statements:>10}"
        )
    before, after = (statistics.median(row[1]) for row in rows)
    print(f"median speed-up: {before / after:.0f}x")


if __name__ == "__main__":
    main()
