"""Console page render times with 1,000 tenants and 100,000 entries (issue 9's benchmark).

Prints, from one run on embedded PostgreSQL, Redis and OpenBao (a temporary data dir, or the
external servers named by HALLMARK_*_URL), p50/p95 in milliseconds of each tenant console page
(as the owner of the tenant holding the 100,000 entries) and each operator page (over every
tenant), rendered by Django's full request path (middleware, session, templates) in this
process through the test client; no network, no gunicorn.

The data is bulk-inserted, not made through the API: one real signup holds the entries
(`bulk_create`, revisions past the tenant's counter), the other tenants are their rows plus a
schema cloned from the template (no CA keys: the operator pages do not read them), 30 days of
usage counters and gauge samples per tenant, last month closed (one invoice each, through
`close_period`, which prints its own time), and audit events in the big tenant's chain.

Run: `.venv/bin/python -m benchmarks.console_render [--tenants 1000] [--entries 100000]
[--samples 20] [--audit-events 20000]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PASSWORD = "correct horse battery staple"  # noqa: S105 - a benchmark's throwaway account
BATCH = 5000
CLONE_WORKERS = 2


def _setup(data_dir: Path) -> Any:
    os.environ.setdefault("HALLMARK_DATA_DIR", str(data_dir))
    os.environ.setdefault("HALLMARK_FAST_PASSWORD_HASHER", "true")
    os.environ.setdefault("HALLMARK_LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config import embedded

    servers = embedded.ensure_started(Path(os.environ["HALLMARK_DATA_DIR"]))
    import django

    django.setup()
    from django.core.management import call_command

    from tenants.schemas import migrate_template

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    migrate_template(verbosity=0)
    return servers


def _timed(label: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    print(f"  {label}: {time.perf_counter() - started:.1f}s", flush=True)
    return result


def _big_tenant() -> Any:
    from tenants import services

    td = f"big-{uuid.uuid4().hex[:6]}.bench"
    return services.signup(name="big", trust_domain=td, email=f"ops@{td}", password=PASSWORD)


def _entries(tenant: Any, count: int) -> None:
    """`count` entries under 100 parents, each with two selectors, a few with DNS names."""
    from django.db import transaction

    from issuance.models import Entry
    from tenants.scoping import tenant_schema

    td = tenant.trust_domain
    with tenant_schema(tenant), transaction.atomic():
        for start in range(0, count, BATCH):
            rows = []
            for n in range(start, min(start + BATCH, count)):
                parent = f"spiffe://{td}/node/{n % 100}"
                rows.append(
                    Entry(
                        spiffe_id=f"spiffe://{td}/service/{n // 10}/replica-{n % 10}",
                        parent_id=parent,
                        selectors=sorted([f"k8s:ns:team-{n % 50}", f"unix:uid:{1000 + n}"]),
                        x509_svid_ttl=3600,
                        jwt_svid_ttl=300,
                        dns_names=[f"svc-{n}.internal"] if n % 20 == 0 else [],
                        revision=10_000_000 + n,
                        roots=[parent],
                    )
                )
            Entry.objects.bulk_create(rows)


def _other_tenants(count: int) -> list[Any]:
    """Tenant rows and cloned schemas, as many as asked, in the public schema."""
    from django.db import connection, transaction

    from tenants.models import Tenant
    from tenants.schemas import create_tenant_schema

    connection.set_schema_to_public()
    plans = ("", "free", "team")
    made = []
    for n in range(count):
        tenant_id = uuid.uuid4()
        made.append(
            Tenant(
                id=tenant_id,
                schema_name=f"t_{tenant_id.hex}",
                slug=f"bench-{n:04d}-{tenant_id.hex[:6]}",
                name=f"Bench tenant {n}",
                trust_domain=f"bench-{n}-{tenant_id.hex[:6]}.bench",
                plan=plans[n % 3],
                status="suspended" if n % 97 == 0 else "active",
            )
        )
    Tenant.objects.bulk_create(made)

    def clone(tenant: Any) -> None:
        try:
            with transaction.atomic():
                create_tenant_schema(tenant.schema_name)
        finally:
            connection.close()  # each worker thread's own connection

    with ThreadPoolExecutor(CLONE_WORKERS) as pool:
        list(pool.map(clone, made))
    return made


def _usage(tenants: list[Any], days: int = 30) -> None:
    """Counters and one gauge sample a day per tenant over the last `days` days."""
    from tenants.metering.models import DailyUsage, GaugeSample

    today = dt.datetime.now(tz=dt.UTC).date()
    counters, gauges = [], []
    for i, tenant in enumerate(tenants):
        for d in range(days):
            date = today - dt.timedelta(days=d)
            scale = 1 + (i % 40)
            for metric, value in (
                ("x509_svids_issued", scale * 240 + d),
                ("jwt_svids_issued", scale * 30),
                ("api_calls", scale * 12 + d % 5),
            ):
                counters.append(DailyUsage(tenant=tenant, date=date, metric=metric, value=value))
            gauges.append(
                GaugeSample(
                    tenant=tenant,
                    hour=dt.datetime.combine(date, dt.time(12), tzinfo=dt.UTC),
                    agents_active=scale,
                    entries=scale * 10,
                    federation_relationships=i % 3,
                )
            )
    DailyUsage.objects.bulk_create(counters, batch_size=BATCH)
    GaugeSample.objects.bulk_create(gauges, batch_size=BATCH)


def _audit(tenant: Any, count: int) -> None:
    from tenants.services import AuditRecord, record_audits

    for start in range(0, count, 500):
        record_audits(
            tenant=tenant,
            actor="token:bench",
            records=[
                AuditRecord(
                    action="entry.create" if n % 3 else "agent.attest",
                    target=f"entry-{n}",
                    detail={"n": n},
                )
                for n in range(start, min(start + 500, count))
            ],
        )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _measure(client: Any, path: str, samples: int) -> tuple[float, float, int]:
    answer = client.get(path)  # warm: templates compiled, connections open
    assert answer.status_code == 200, (path, answer.status_code, answer.content[:300])
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = client.get(path)
        if hasattr(answer, "streaming_content"):
            b"".join(answer.streaming_content)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), _percentile(times, 0.95), len(answer.content)


def _profile(client: Any, path: str) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(client.get, path)
    print(f"\nprofile of {path} (own time, top 15):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--audit-events", type=int, default=20_000)
    parser.add_argument(
        "--profile", action="append", default=[], help="a path to profile once (cProfile)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hallmark-console-bench-") as data_dir:
        print("setting up", flush=True)
        servers = _setup(Path(data_dir))
        from django.test import Client

        from tenants import operators
        from tenants.billing import services as billing

        big = _timed("signup (the tenant of the entries)", _big_tenant).tenant
        _timed(f"{args.entries:,} entries (bulk)", lambda: _entries(big, args.entries))
        others = _timed(
            f"{args.tenants - 1:,} more tenants (rows + cloned schemas)",
            lambda: _other_tenants(args.tenants - 1),
        )
        _timed("30 days of usage per tenant (bulk)", lambda: _usage([big, *others]))
        _timed(f"{args.audit_events:,} audit events", lambda: _audit(big, args.audit_events))
        month = (dt.datetime.now(tz=dt.UTC).date().replace(day=1) - dt.timedelta(days=1)).strftime(
            "%Y-%m"
        )
        _timed(
            f"close {month} ({args.tenants:,} invoices)",
            lambda: billing.close_period(period=month, actor="operator:bench"),
        )
        operators.create_operator(email="ops@platform.bench", password=PASSWORD)

        owner, operator = Client(), Client()
        signed = owner.post("/login", {"email": f"ops@{big.trust_domain}", "password": PASSWORD})
        assert signed.status_code == 302, signed.content[:300]
        signed = operator.post(
            "/operator/login", {"email": "ops@platform.bench", "password": PASSWORD}
        )
        assert signed.status_code == 302, signed.content[:300]
        console = f"/console/{big.slug}/"
        pages = [
            ("tenant", owner, console),
            ("tenant", owner, console + "entries/"),
            ("tenant", owner, console + "entries/?page=1000"),
            ("tenant", owner, console + "entries/?q=service/4242"),
            ("tenant", owner, console + "entries/?selector=k8s:ns:team-7"),
            ("tenant", owner, console + "agents/"),
            ("tenant", owner, console + "federation/"),
            ("tenant", owner, console + "members/"),
            ("tenant", owner, console + "api-tokens/"),
            ("tenant", owner, console + "audit/"),
            ("tenant", owner, console + "usage/"),
            ("tenant", owner, console + "invoices/"),
            ("operator", operator, "/operator/"),
            ("operator", operator, "/operator/?sort=agents"),
            ("operator", operator, f"/operator/tenants/{big.pk}/"),
            ("operator", operator, "/operator/usage"),
            ("operator", operator, "/operator/billing"),
            ("operator", operator, "/operator/audit"),
            ("operator", operator, "/operator/health"),
        ]
        print(
            f"\n{args.tenants:,} tenants, {args.entries:,} entries in one, "
            f"{args.samples} samples a page",
            flush=True,
        )
        print(f"{'page':<52} {'p50 ms':>8} {'p95 ms':>8} {'KB':>7}")
        for kind, client, path in pages:
            p50, p95, size = _measure(client, path, args.samples)
            label = f"{kind} {path}".replace(big.slug, "<big>").replace(str(big.pk), "<id>")
            print(f"{label:<52} {p50:8.1f} {p95:8.1f} {size / 1024:7.1f}", flush=True)
        for path in args.profile:
            _profile(operator if path.startswith("/operator") else owner, path)
        from issuance.services.agents import unbanned_agent_counts
        from tenants.models import Tenant

        listed = list(Tenant.objects.exclude(schema_name="public").order_by("-created_at")[:500])
        counted = time.perf_counter()
        unbanned_agent_counts(listed)
        print(
            f"\nof /operator/: each listed tenant's agents (one UNION ALL over {len(listed)} "
            f"schemas), one run: {(time.perf_counter() - counted) * 1000:.0f} ms"
        )
        verify_started = time.perf_counter()
        owner.get(console + "audit/verify")
        print(
            f"audit verify of the big tenant's chain ({args.audit_events:,}+ events), one run: "
            f"{(time.perf_counter() - verify_started) * 1000:.0f} ms"
        )
        if servers is not None:
            servers.stop()


if __name__ == "__main__":
    main()
