"""The cost of metering on the minting path: the same SVID minting with and without it.

Prints, from one run on one machine (its own embedded servers in a temporary data dir, or the
external ones named by HALLMARK_*_URL):
  X.509-SVIDs per second through `issuance.services.new_x509_svids` (the agent API's
  BatchNewX509SVID minus gRPC: authorised-entry lookup, CSR checks, key-manager signing),
  batches of 100 CSRs, in alternating rounds with metering on and off (so drift in the
  machine's load hits both alike), and the slowdown metering costs (goal: under 5%);
  one `counters.count` call (the whole hot-path cost of metering: one Redis round trip),
  p50/p99 in microseconds;
  a roll-up of 3,000 counters (as 1,000 tenants' day of 3 metrics would be), in ms.
Run: `.venv/bin/python -m benchmarks.metering [--rounds 6] [--seconds 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BATCH = 100
GOAL = 0.05


def _setup(data_dir: Path) -> None:
    os.environ["HALLMARK_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("HALLMARK_SECRET_KEY", "benchmark-" + uuid.uuid4().hex)
    os.environ.setdefault("HALLMARK_LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    from config import embedded

    embedded.ensure_started(data_dir, progress=lambda line: print(f"  {line}", flush=True))
    subprocess.run(
        [sys.executable, "-m", "config.cli", "migrate"], check=True, stdout=subprocess.DEVNULL
    )
    import django

    django.setup()


def _tenant_with_agent() -> tuple[object, object, list[str]]:
    """A tenant, an attested-looking agent of it, and BATCH entries under the agent."""
    import datetime as dt

    from django.utils import timezone

    from issuance import services as issuance
    from issuance.models import Agent
    from tenants import services
    from tenants.scoping import tenant_schema

    suffix = uuid.uuid4().hex[:8]
    tenant = services.signup(
        name=f"Metering bench {suffix}",
        trust_domain=f"meter-{suffix}.test",
        email=f"owner-{suffix}@example.com",
        password="correct horse battery staple",  # noqa: S106 - a throwaway tenant
    ).tenant
    with tenant_schema(tenant):
        agent = Agent.objects.create(
            spiffe_id=f"spiffe://{tenant.trust_domain}/spire/agent/bench",
            attestation_type="join_token",
            serial="bench",
            expires_at=timezone.now() + dt.timedelta(hours=4),
        )
        results = issuance.batch_create_entries(
            tenant=tenant,
            actor="benchmark",
            items=[
                {
                    "spiffe_id": f"spiffe://{tenant.trust_domain}/w/{n}",
                    "parent_id": agent.spiffe_id,
                    "selectors": [f"unix:uid:{1000 + n}"],
                }
                for n in range(BATCH)
            ],
        )
    return tenant, agent, [str(r.entry.id) for r in results if r.entry is not None]


def _mint_rate(tenant, agent, entry_ids: list[str], csrs: list[bytes], seconds: float) -> float:  # type: ignore[no-untyped-def]
    from issuance import services as issuance
    from tenants.scoping import tenant_schema

    requests = [issuance.SvidRequest(e, c) for e, c in zip(entry_ids, csrs, strict=True)]
    done, started = 0, time.perf_counter()
    with tenant_schema(tenant):
        while time.perf_counter() - started < seconds:
            results = issuance.new_x509_svids(tenant=tenant, agent=agent, requests=requests)
            done += sum(1 for r in results if r.chain)
    return done / (time.perf_counter() - started)


def _count_latency(tenant_id: object, calls: int) -> tuple[float, float]:
    from tenants.metering import counters

    times = []
    for _ in range(calls):
        started = time.perf_counter()
        counters.count(str(tenant_id), counters.X509_SVIDS, BATCH)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def _roll_up_ms(tenant_id: str, days: int) -> tuple[float, int]:
    """A roll-up of `days` x 3 counters (each its own DailyUsage row to upsert)."""
    import datetime as dt

    from tenants.metering import counters, rollup

    rollup.roll_up()  # whatever the minting rounds left
    today = counters.today()
    for n in range(days):
        for metric in counters.COUNTERS:
            counters.count(tenant_id, metric, 3, day=today - dt.timedelta(days=n))
    started = time.perf_counter()
    stored = rollup.roll_up()
    return (time.perf_counter() - started) * 1000, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds each, on and off")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="hallmark-bench-metering-"))
    print(f"data dir {data_dir}", flush=True)
    _setup(data_dir)
    from cryptography.hazmat.primitives.asymmetric import ec

    from config import embedded
    from hallmark.x509svid import make_csr
    from tenants.metering import counters

    try:
        tenant, agent, entry_ids = _tenant_with_agent()
        csrs = [make_csr(ec.generate_private_key(ec.SECP256R1())) for _ in entry_ids]
        _mint_rate(tenant, agent, entry_ids, csrs, 1.0)  # warm-up
        on: list[float] = []
        off: list[float] = []
        for round_ in range(args.rounds):
            for enabled, figures in (
                ((True, on), (False, off))
                if round_ % 2
                else (
                    (False, off),
                    (True, on),
                )
            ):
                counters.enabled = enabled
                figures.append(_mint_rate(tenant, agent, entry_ids, csrs, args.seconds))
                state = "on " if enabled else "off"
                print(f"  round {round_ + 1} metering {state}: {figures[-1]:8.1f} SVIDs/s")
        counters.enabled = True
        p50, p99 = _count_latency(tenant.pk, 2000)  # type: ignore[attr-defined]
        roll_ms, stored = _roll_up_ms(str(tenant.pk), 1000)  # type: ignore[attr-defined]
    finally:
        servers = getattr(embedded, "_running", None)
        if servers is not None:
            servers.stop()

    with_m, without = statistics.median(on), statistics.median(off)
    slowdown = (without - with_m) / without
    print("\nX.509-SVID minting (new_x509_svids, batches of 100), median of the rounds")
    print(f"  without metering: {without:8.1f} SVIDs/s")
    print(f"  with metering:    {with_m:8.1f} SVIDs/s")
    verdict = "met" if slowdown < GOAL else "MISSED"
    print(f"  slowdown: {slowdown * 100:+.2f}% (goal < {GOAL * 100:.0f}%: {verdict})")
    print(f"one counters.count call (one Redis round trip): p50 {p50:.0f} us, p99 {p99:.0f} us")
    batch_us = BATCH / without * 1e6
    print(
        f"  = {p50 / batch_us * 100:.2f}% of one batch's minting time ({batch_us / 1000:.1f} ms): "
        "the cost metering adds, free of the rounds' noise"
    )
    print(f"roll-up of 3,000 counters (1,000 days x 3 metrics): {roll_ms:.0f} ms ({stored} batch)")


if __name__ == "__main__":
    main()
