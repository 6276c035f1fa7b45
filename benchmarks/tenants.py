"""Many tenants: signup latency as tenants pile up, `hallmark up` start, one rotation sweep.

Prints, from one run on one machine (its own embedded servers in a temporary data dir, or the
external ones named by HALLMARK_*_URL):
  signup p50/p95 (a real signup: schema, trust domain, CA and JWT keys in the key manager,
  owner, token) when 10, 100 and 1,000 tenants exist;
  `hallmark up` start time (to /healthz 200) with those tenants, and the migration step alone
  when every schema is current and when every schema is recorded as behind (what each start
  cost before per-schema migration state);
  one rotation sweep over every tenant, as a worker runs it (rotate_trust_domain per tenant, in
  this process): tenants per second and whether it fits the rotation interval.
Goals (issue "Scale and operations"): signup p95 < 1 s at 1,000; start < 10 s at 1,000; a
sweep within its interval with no tenant skipped.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STEPS = (10, 100, 1000)
SAMPLES = 20
GOAL_SIGNUP_P95 = 1.0
GOAL_START = 10.0


def _setup(data_dir: Path) -> None:
    os.environ["HALLMARK_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("HALLMARK_SECRET_KEY", "benchmark-" + uuid.uuid4().hex)
    os.environ.setdefault("HALLMARK_SIGNUP_RATE_LIMIT", "1000000/60")
    os.environ.setdefault("HALLMARK_LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    from config import embedded

    embedded.ensure_started(data_dir, progress=lambda line: print(f"  {line}", flush=True))
    subprocess.run(
        [sys.executable, "-m", "config.cli", "migrate"], check=True, stdout=subprocess.DEVNULL
    )
    import django

    django.setup()


def _signup(label: str) -> float:
    from django.db import close_old_connections

    from tenants import services

    started = time.perf_counter()
    suffix = uuid.uuid4().hex[:10]
    services.signup(
        name=f"{label} {suffix}",
        trust_domain=f"{label}-{suffix}.bench.test",
        email=f"ops-{suffix}@bench.test",
        password="correct horse battery staple",  # noqa: S106 - a benchmark's throwaway account
    )
    close_old_connections()
    return time.perf_counter() - started


def _tenant_count() -> int:
    from tenants.scoping import all_tenant_ids

    return len(all_tenant_ids())


def _fill(target: int, workers: int) -> None:
    missing = target - _tenant_count()
    if missing <= 0:
        return
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(_signup, ["fill"] * missing), start=1):
            if done % 100 == 0:
                print(f"  {done}/{missing} tenants signed up", flush=True)
    print(f"  filled to {target} tenants in {time.perf_counter() - started:.0f}s", flush=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _migrate_seconds(*, all_behind: bool) -> float:
    from tenants.models import Tenant

    if all_behind:
        Tenant.objects.exclude(schema_name="public").update(migrated_to="")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "config.cli", "migrate"], check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up_seconds(data_dir: Path) -> float:
    import requests

    http, grpc = _free_port(), _free_port()
    log = open(data_dir / "bench-up.log", "ab")  # noqa: SIM115
    started = time.perf_counter()
    plane = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "hallmark"),
            "up",
            "--data-dir",
            str(data_dir / "up"),
            "--http",
            f"127.0.0.1:{http}",
            "--grpc",
            f"127.0.0.1:{grpc}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{http}/healthz", timeout=2).ok:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            if plane.poll() is not None:
                raise SystemExit(f"hallmark up exited; see {data_dir / 'bench-up.log'}")
            time.sleep(0.1)
        raise SystemExit("hallmark up did not become healthy in 300 s")
    finally:
        plane.terminate()
        plane.wait(timeout=60)


def _sweep() -> tuple[int, float]:
    from tenants.scoping import all_tenant_ids
    from trustdomains.tasks import rotate_trust_domain

    ids = all_tenant_ids()
    started = time.perf_counter()
    for tenant_id in ids:
        rotate_trust_domain(str(tenant_id))
    return len(ids), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--fill-workers", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="hallmark-bench-tenants-"))
    print(f"data dir {data_dir}", flush=True)
    _setup(data_dir)
    from django.conf import settings

    rows = []
    for step in args.steps:
        _fill(step, args.fill_workers)
        times = [_signup("sample") for _ in range(args.samples)]
        rows.append((step, statistics.median(times), _percentile(times, 0.95)))
        print(f"  at {step}: signup p50 {rows[-1][1]:.3f}s p95 {rows[-1][2]:.3f}s", flush=True)
    tenants = _tenant_count()
    migrate_current = _migrate_seconds(all_behind=False)
    up = _up_seconds(data_dir)
    migrate_behind = _migrate_seconds(all_behind=True)
    swept, sweep = _sweep()

    print("\nsignup latency as tenants pile up")
    print(f"{'existing tenants':>18} | {'p50':>7} | {'p95':>7} | goal p95 < {GOAL_SIGNUP_P95:.0f}s")
    for step, p50, p95 in rows:
        verdict = "met" if p95 < GOAL_SIGNUP_P95 else "MISSED"
        print(f"{step:>18} | {p50:6.3f}s | {p95:6.3f}s | {verdict}")
    print(f"\nwith {tenants} tenants")
    verdict = "met" if up < GOAL_START else "MISSED"
    goal = f"goal < {GOAL_START:.0f}s: {verdict}"
    print(f"  hallmark up to /healthz 200:            {up:7.1f}s ({goal})")
    print(f"  hallmark migrate, every schema current: {migrate_current:7.1f}s")
    print(f"  hallmark migrate, every schema behind:  {migrate_behind:7.1f}s (the old cost)")
    interval = float(settings.ROTATION_INTERVAL_SECONDS)
    print(
        f"  one rotation sweep, one worker: {swept} tenants in {sweep:.1f}s "
        f"({swept / sweep:.0f}/s; interval {interval:.0f}s: "
        f"{'fits' if sweep < interval else 'DOES NOT FIT'})"
    )


if __name__ == "__main__":
    main()
