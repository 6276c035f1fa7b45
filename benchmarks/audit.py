"""Audit trail costs: the hash chain on the write path, verify speed, and export throughput.

Prints, from one run on embedded PostgreSQL, Redis and OpenBao (in a temporary data dir,
in this process; or the servers HALLMARK_*_URL name):
  record_audit      events/s and µs an event, one transaction each: chained (lock the chain
                    head, hash, insert, advance the head) beside the same row inserted
                    unchained (what the trail wrote before the chain)
  chain lock        the locking step alone: the chain-head upsert beside a
                    pg_advisory_xact_lock + read of the last link (the alternative)
  parallel          4 threads appending to one chain, and to 4 chains
  entry create      POST /api/v1/entries through Django's test client (the whole view, its
                    transaction and its audit row), with the chain and with unchained rows
  verify            events/s over a --events trail, and the peak RSS of the process doing it
  export            jsonl and csv of the same trail: rows/s, MB/s, chunks, peak RSS

Run: `.venv/bin/python -m benchmarks.audit [--events 100000] [--writes 2000] [--entries 300]`.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _setup(data_dir: Path) -> None:
    os.environ.setdefault("HALLMARK_DATA_DIR", str(data_dir))
    os.environ.setdefault("HALLMARK_FAST_PASSWORD_HASHER", "true")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config import embedded

    embedded.ensure_started(Path(os.environ["HALLMARK_DATA_DIR"]))
    import django

    django.setup()
    from django.core.management import call_command

    from tenants.schemas import migrate_template

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    migrate_template(verbosity=0)


def _tenant(label: str) -> Any:
    import secrets

    from tenants import services

    td = f"{label}-{secrets.token_hex(3)}.bench"
    return services.signup(
        name=label,
        trust_domain=td,
        email=f"ops@{td}",
        password="correct horse battery staple",  # noqa: S106 - a benchmark account
    )


def _interleaved(
    count: int, first: Callable[[int], None], second: Callable[[int], None], rounds: int = 10
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Both workloads in alternating rounds (so a change in the machine's load hits both);
    each one's (per second, µs each)."""
    spent = [0.0, 0.0]
    done = 0
    size = max(count // rounds, 1)
    for start in range(0, count, size):
        block = range(start, min(start + size, count))
        for slot, work in enumerate((first, second)):
            started = time.perf_counter()
            for i in block:
                work(i)
            spent[slot] += time.perf_counter() - started
        done += len(block)
    return (done / spent[0], spent[0] / done * 1e6), (done / spent[1], spent[1] / done * 1e6)


def _unchained_writer() -> Callable[..., None]:
    """The row record_audit writes, inserted with no lock and no hashes (the old trail)."""
    from django.utils import timezone

    from tenants.audit.models import AuditEvent

    counter = itertools.count(10_000_000)

    def write(*, tenant: Any, actor: str, action: str, target: str = "", **_: Any) -> None:
        AuditEvent.objects.create(
            tenant=tenant,
            tenant_slug=tenant.slug,
            sequence=next(counter),
            at=timezone.now(),
            actor=actor,
            action=action,
            target=target,
            detail={},
            prev_hash="",
            hash="",
        )

    return write


def bench_writes(count: int) -> None:
    from django.db import connection, transaction

    from tenants.audit.services import advance_head, lock_chain
    from tenants.services import record_audit

    tenant = _tenant("writes").tenant
    plain = _unchained_writer()
    other = _tenant("plain").tenant
    (chained, us_chained), (unchained, us_plain) = _interleaved(
        count,
        lambda i: record_audit(tenant=tenant, actor="bench", action="entry.create", target=str(i)),
        lambda i: plain(tenant=other, actor="bench", action="entry.create", target=str(i)),
    )
    print(
        f"record_audit     chained {chained:8.0f} events/s ({us_chained:6.0f} µs)   "
        f"unchained {unchained:8.0f} events/s ({us_plain:6.0f} µs)   "
        f"chain costs {us_chained - us_plain:+.0f} µs an event"
    )

    # Each in a write transaction (the caller's always is one): the lock, plus one row written.
    def upsert(i: int) -> None:
        with transaction.atomic():
            _, head = lock_chain(tenant.pk, 1)
            plain(tenant=other, actor="bench", action="lock", target=str(i))
            advance_head(tenant.pk, head)

    def advisory(i: int) -> None:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [tenant.pk.hex])
                cursor.execute(
                    "SELECT sequence, hash FROM audit_auditevent WHERE tenant_id = %s "
                    "ORDER BY sequence DESC LIMIT 1",
                    [tenant.pk],
                )
                cursor.fetchone()
            plain(tenant=other, actor="bench", action="lock", target=str(i))

    (up, us_up), (adv, us_adv) = _interleaved(count, upsert, advisory)
    print(
        f"chain lock       write transactions with the head-row upsert {up:6.0f}/s "
        f"({us_up:5.0f} µs), with pg_advisory_xact_lock + last link {adv:6.0f}/s ({us_adv:5.0f} µs)"
    )


def bench_parallel(count: int) -> None:
    from django.db import connections

    from tenants.services import record_audit

    tenants = [_tenant(f"par{i}").tenant for i in range(4)]
    for label, targets in (("one chain", [tenants[0]] * 4), ("4 chains", tenants)):
        barrier = threading.Barrier(4)

        def writer(tenant: Any, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for i in range(count // 4):
                record_audit(tenant=tenant, actor="bench", action="x", target=str(i))
            connections.close_all()

        threads = [threading.Thread(target=writer, args=(t,)) for t in targets]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = (count // 4 * 4) / (time.perf_counter() - started)
        print(f"parallel         4 threads, {label:9}: {rate:8.0f} events/s")


def bench_entries(count: int) -> None:
    from rest_framework.test import APIClient

    from tenants.audit import services as audit_services

    result = _tenant("entries")
    td = result.tenant.trust_domain
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {result.token}")

    def create(label: str) -> Callable[[int], None]:
        def work(i: int) -> None:
            answer = client.post(
                "/api/v1/entries",
                {
                    "spiffe_id": f"spiffe://{td}/{label}/{i}",
                    "parent_id": f"spiffe://{td}/node",
                    "selectors": [f"unix:uid:{i}"],
                },
                format="json",
            )
            if answer.status_code != 201:
                raise SystemExit(f"POST /entries answered {answer.status_code}: {answer.content!r}")

        return work

    create("warm")(0)
    real_link = audit_services._link
    plain = _unchained_writer()

    def unchained_link(*, tenant: Any, actor: str, records: Any, **_: Any) -> list[Any]:
        for record in records:
            plain(tenant=tenant, actor=actor, action=record.action, target=record.target)
        return [None] * len(records)

    chained_create, unchained_create = create("chained"), create("unchained")

    def without_chain(i: int) -> None:
        audit_services._link = unchained_link  # type: ignore[assignment]
        try:
            unchained_create(i)
        finally:
            audit_services._link = real_link

    (chained, us_chained), (unchained, us_plain) = _interleaved(
        count, chained_create, without_chain
    )
    print(
        f"entry create     chained {chained:6.0f} entries/s ({us_chained / 1000:5.2f} ms)   "
        f"unchained {unchained:6.0f} entries/s ({us_plain / 1000:5.2f} ms)   "
        f"chain costs {(us_chained - us_plain) / 1000:+.2f} ms an entry"
    )


def _bulk_chain(tenant: Any, count: int) -> None:
    """`count` valid links appended to the tenant's chain, 5,000 a transaction."""
    from django.db import transaction
    from django.utils import timezone

    from tenants.audit.models import AuditEvent
    from tenants.audit.services import advance_head, build_event, lock_chain

    for first in range(0, count, 5000):
        size = min(5000, count - first)
        with transaction.atomic():
            sequence, prev = lock_chain(tenant.pk, size)
            events = []
            for i in range(size):
                sequence += 1
                event = build_event(
                    tenant_id=tenant.pk,
                    tenant_slug=tenant.slug,
                    sequence=sequence,
                    at=timezone.now(),
                    actor="token:bench",
                    action="entry.create",
                    target=f"spiffe://{tenant.trust_domain}/workload/{first + i}",
                    outcome="success",
                    source="10.0.0.1",
                    request_id=f"req-{first + i}",
                    detail={"selectors": ["k8s:ns:prod", f"k8s:pod-name:w{first + i}"]},
                    prev_hash=prev,
                )
                prev = event.hash
                events.append(event)
            AuditEvent.objects.bulk_create(events, batch_size=1000)
            advance_head(tenant.pk, prev)


def _in_child(job: Callable[[Any], str], arg: Any) -> str:
    """Run `job(arg)` in a forked process so its peak RSS is its own."""
    from django.db import connections

    connections.close_all()
    context = multiprocessing.get_context("fork")
    queue: Any = context.Queue()

    def run() -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        line = job(arg)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        queue.put(f"{line}   peak RSS {peak / 1024:.0f} MB (at start {before / 1024:.0f} MB)")

    child = context.Process(target=run)
    child.start()
    line = str(queue.get(timeout=1800))
    child.join()
    return line


def _verify(tenant: Any) -> str:
    from tenants.audit.verify import verify_chain

    started = time.perf_counter()
    result = verify_chain(tenant.pk)
    seconds = time.perf_counter() - started
    assert result.valid, result
    rate = result.events / seconds
    return f"verify           {result.events} events in {seconds:.2f} s: {rate:8.0f} events/s"


def _export(job: tuple[str, str]) -> str:
    token, output = job
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    started = time.perf_counter()
    answer = client.get("/api/v1/audit-events", {"format": output})
    rows = size = chunks = 0
    for chunk in answer.streaming_content:
        chunks += 1
        size += len(chunk)
        rows += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    return (
        f"export {output:5}     {rows} rows in {seconds:.2f} s: {rows / seconds:8.0f} rows/s, "
        f"{size / seconds / 1e6:5.1f} MB/s, {chunks} chunks"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hallmark-audit-bench-") as tmp:
        _setup(Path(tmp))
        print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
        bench_writes(args.writes)
        bench_parallel(args.writes)
        bench_entries(args.entries)
        result = _tenant("trail")
        started = time.perf_counter()
        _bulk_chain(result.tenant, args.events)
        print(f"(built a {args.events}-event chain in {time.perf_counter() - started:.1f} s)")
        print(_in_child(_verify, result.tenant))
        for output in ("jsonl", "csv"):
            print(_in_child(_export, (result.token, output)))
        from config import embedded

        servers = embedded.ensure_started(Path(tmp))
        if servers is not None:
            servers.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
