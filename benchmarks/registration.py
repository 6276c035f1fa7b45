"""Registration rate: entries/s one by one through REST beside batched (500 a call), same run,
and 10,000 entries registered end to end until a connected agent's sync holds them all.

Prints, from one run of a real `hallmark up` (embedded PostgreSQL, Redis, OpenBao):
  one by one   POST /api/v1/entries, one keep-alive client, --single entries
  batched      POST /api/v1/entries/batch-create of --batch-size entries a call, one client,
               --batched entries; then batch-update (a new hint) and batch-delete of them
  end to end   --end-to-end entries in batch calls while an agent (its own process, the
               agent's own AgentClient and sync code over mTLS) follows WatchUpdates pushes
               and syncs: the time until the last call answered, and until the agent held
               every entry
and the goals of issue 15 (>= 1,000 entries/s batched; 10,000 end to end in under 10 s).

Run: `.venv/bin/python -m benchmarks.registration [--single 300] [--batched 5000]
[--end-to-end 10000] [--batch-size 500]`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import resource
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

GOAL_BATCHED_RATE = 1000.0
GOAL_END_TO_END_SECONDS = 10.0
AGENT_TIMEOUT = 300.0


def _signup(url: str) -> tuple[str, str]:
    td = f"reg-{secrets.token_hex(3)}.test"
    answer = requests.post(
        f"{url}/api/v1/signup",
        timeout=60,
        json={
            "name": "registration bench",
            "trust_domain": td,
            "email": f"ops@{td}",
            "password": "correct horse battery staple",
        },
    )
    answer.raise_for_status()
    return td, answer.json()["token"]


def _entry(td: str, parent: str, name: str) -> dict[str, Any]:
    return {
        "spiffe_id": f"spiffe://{td}/{name}",
        "parent_id": parent,
        "selectors": ["k8s:ns:bench", f"k8s:pod-name:{name}"],
    }


def one_by_one(session: requests.Session, url: str, td: str, count: int, label: str) -> float:
    parent = f"spiffe://{td}/node/{label}"
    started = time.perf_counter()
    for i in range(count):
        answer = session.post(f"{url}/api/v1/entries", json=_entry(td, parent, f"{label}/{i}"))
        if answer.status_code != 201:
            raise SystemExit(f"POST /entries answered {answer.status_code}: {answer.text[:300]}")
    return count / (time.perf_counter() - started)


def batched(
    session: requests.Session, url: str, *, td: str, parent: str, label: str, count: int, size: int
) -> tuple[float, list[str]]:
    """Register `count` entries in calls of `size`; the seconds it took and the entries' ids."""
    ids: list[str] = []
    started = time.perf_counter()
    for first in range(0, count, size):
        items = [_entry(td, parent, f"{label}/{i}") for i in range(first, min(first + size, count))]
        ids += _call(session, f"{url}/api/v1/entries/batch-create", {"entries": items})
    return time.perf_counter() - started, ids


def batched_changes(
    session: requests.Session, url: str, *, operation: str, ids: list[str], size: int
) -> float:
    """batch-update (a new hint for each entry) or batch-delete of `ids`; the seconds it took."""
    started = time.perf_counter()
    for first in range(0, len(ids), size):
        chunk = ids[first : first + size]
        body: dict[str, Any] = (
            {"entries": [{"id": i, "hint": "redeployed"} for i in chunk]}
            if operation == "update"
            else {"ids": chunk}
        )
        _call(session, f"{url}/api/v1/entries/batch-{operation}", body)
    return time.perf_counter() - started


def _call(session: requests.Session, url: str, body: dict[str, Any]) -> list[str]:
    answer = session.post(url, json=body)
    if answer.status_code != 200:
        raise SystemExit(f"{url} answered {answer.status_code}: {answer.text[:300]}")
    results = answer.json()["results"]
    failed = [r["status"] for r in results if r["status"]["code"] != "ok"]
    if failed:
        raise SystemExit(f"{url} refused {len(failed)} items, first: {failed[0]}")
    return [r["entry"]["id"] for r in results]


# -- the agent, in a process of its own --------------------------------------------------------
def _agent(job: dict[str, Any], ready: Any, results: Any) -> None:
    try:
        asyncio.run(_follow(job, ready, results))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        results.put(f"agent failed: {exc!r}")


async def _follow(job: dict[str, Any], ready: Any, results: Any) -> None:
    """Attest, sync, then follow pushes: sync on each notice until `want` entries are held."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from agent.client import AgentClient
    from agent.entrysync import sync_entries
    from agent.state import X509Svid
    from hallmark.bundle import Bundle
    from hallmark.spiffeid import TrustDomain
    from hallmark.x509svid import make_csr

    trust_domain = TrustDomain(job["trust_domain"])
    raw = requests.get(f"{job['url']}/bundle/{trust_domain.name}", timeout=30).content
    client = AgentClient(job["grpc"], trust_domain)
    await client.configure(Bundle.parse(trust_domain, raw), None)
    key = ec.generate_private_key(ec.SECP256R1())
    attestation = await client.attest(job["join_token"], make_csr(key))
    await client.configure(attestation.bundle, X509Svid(attestation.chain, key))
    sync_started = time.monotonic()
    first = await sync_entries(client, {}, 0)
    first_sync = time.monotonic() - sync_started
    held, revision = first.entries, first.revision
    notices: asyncio.Queue[int] = asyncio.Queue()
    pushes = 0

    async def watch() -> None:
        async for notice in client.watch_updates():
            notices.put_nowait(notice.entries_revision)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(1.0)  # the stream is open and subscribed server-side
    ready.set()
    syncs = 0
    while len(held) < job["want"]:
        latest = await notices.get()
        pushes += 1
        while not notices.empty():  # several pushes while syncing: one sync covers them
            latest = max(latest, notices.get_nowait())
            pushes += 1
        if latest <= revision:
            continue
        result = await sync_entries(client, held, revision)
        held, revision, syncs = result.entries, result.revision, syncs + 1
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results.put(
        {
            "at": time.monotonic(),
            "held": len(held),
            "pushes": pushes,
            "syncs": syncs,
            "agent_peak_mib": peak_kib / 1024,
            "first_sync": first_sync,
            "first_held": len(first.entries),
        }
    )
    watcher.cancel()
    await client.close()


def end_to_end(
    session: requests.Session, url: str, *, grpc: str, td: str, count: int, size: int
) -> dict[str, Any]:
    alias = f"spiffe://{td}/node/e2e"
    token = session.post(f"{url}/api/v1/join-tokens", json={"ttl": 600, "spiffe_id": alias})
    token.raise_for_status()
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    job = {
        "url": url,
        "grpc": grpc,
        "trust_domain": td,
        "join_token": token.json()["token"],
        "want": count,
    }
    agent = context.Process(target=_agent, args=(job, ready, results), daemon=True)
    agent.start()
    if not ready.wait(timeout=120):
        raise SystemExit("the agent did not attest and subscribe in 120 s")
    started = time.monotonic()
    registered, _ = batched(session, url, td=td, parent=alias, label="e2e", count=count, size=size)
    try:
        answer = results.get(timeout=AGENT_TIMEOUT)
    except queue.Empty:
        raise SystemExit(f"the agent did not hold {count} entries in {AGENT_TIMEOUT} s") from None
    agent.join(timeout=30)
    if isinstance(answer, str):
        raise SystemExit(answer)
    return {"registered": registered, "agent": answer["at"] - started, **answer}


def fresh_agent(session: requests.Session, url: str, *, grpc: str, td: str, count: int) -> Any:
    """A new agent under the same node alias: its first sync of `count` entries at once."""
    alias = f"spiffe://{td}/node/e2e"
    token = session.post(f"{url}/api/v1/join-tokens", json={"ttl": 600, "spiffe_id": alias})
    token.raise_for_status()
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    job = {"url": url, "grpc": grpc, "trust_domain": td, "join_token": token.json()["token"]}
    agent = context.Process(
        target=_agent, args=({**job, "want": count}, ready, results), daemon=True
    )
    agent.start()
    answer = results.get(timeout=AGENT_TIMEOUT)
    agent.join(timeout=30)
    if isinstance(answer, str):
        raise SystemExit(answer)
    return answer


def _agent_api_peaks_mib(plane_pid: int) -> list[int]:
    """Peak resident memory (VmHWM) of each agent-API process `hallmark up` runs."""
    peaks = []
    for pid in Path(f"/proc/{plane_pid}/task/{plane_pid}/children").read_text().split():
        if b"agent-api" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            continue
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) // 1024)
    return peaks


def main() -> None:
    from benchmarks.workload_api import start_control_plane

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=300, help="entries one by one")
    parser.add_argument("--batched", type=int, default=5000, help="entries in batch calls")
    parser.add_argument("--end-to-end", type=int, default=10_000, help="entries to an agent")
    parser.add_argument("--batch-size", type=int, default=500, help="entries a batch call")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hallmark-registration-"))
    print(f"working in {work}", flush=True)
    plane, url, grpc = start_control_plane(work)
    try:
        td, token = _signup(url)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        # warm up: the first calls of a fresh process pay for imports and connections
        one_by_one(session, url, td, 5, "warm-single")
        warm = f"spiffe://{td}/node/warm"
        batched(session, url, td=td, parent=warm, label="warm", count=1000, size=args.batch_size)

        single = one_by_one(session, url, td, args.single, "single")
        print(f"  one by one (POST /entries)        {single:8,.0f} entries/s", flush=True)
        seconds, ids = batched(
            session,
            url,
            td=td,
            parent=f"spiffe://{td}/node/batched",
            label="b",
            count=args.batched,
            size=args.batch_size,
        )
        rate = args.batched / seconds
        print(
            f"  batched ({args.batch_size} a call)            {rate:8,.0f} entries/s"
            f"   ({rate / single:.0f}x one by one)",
            flush=True,
        )
        for operation in ("update", "delete"):
            took = batched_changes(session, url, operation=operation, ids=ids, size=args.batch_size)
            print(
                f"  batch-{operation} ({args.batch_size} a call)       "
                f"{len(ids) / took:8,.0f} entries/s",
                flush=True,
            )
        e2e = end_to_end(
            session, url, grpc=grpc, td=td, count=args.end_to_end, size=args.batch_size
        )
        print(
            f"  end to end, {args.end_to_end:,} entries: registered in {e2e['registered']:.2f} s,"
            f" the agent held all {e2e['held']:,} after {e2e['agent']:.2f} s"
            f" ({e2e['pushes']} pushes, {e2e['syncs']} syncs)",
            flush=True,
        )
        print(
            f"  memory: the agent's client process peaked at {e2e['agent_peak_mib']:.0f} MiB;"
            f" agent-API processes' peak RSS {_agent_api_peaks_mib(plane.pid)} MiB",
            flush=True,
        )
        fresh = fresh_agent(session, url, grpc=grpc, td=td, count=args.end_to_end)
        print(
            f"  a fresh agent's first sync of {fresh['first_held']:,} entries:"
            f" {fresh['first_sync']:.2f} s; its process peaked at"
            f" {fresh['agent_peak_mib']:.0f} MiB; agent-API peak RSS now"
            f" {_agent_api_peaks_mib(plane.pid)} MiB",
            flush=True,
        )
    finally:
        plane.terminate()
        plane.wait(timeout=60)
    print("\ngoals (issue 15):")
    verdict = "MET" if rate >= GOAL_BATCHED_RATE else "NOT MET"
    print(f"  batched >= {GOAL_BATCHED_RATE:,.0f} entries/s: {verdict} ({rate:,.0f}/s)")
    verdict = "MET" if e2e["agent"] < GOAL_END_TO_END_SECONDS else "NOT MET"
    print(
        f"  {args.end_to_end:,} end to end < {GOAL_END_TO_END_SECONDS:.0f} s: {verdict}"
        f" ({e2e['agent']:.2f} s)"
    )
    print(f"  ({os.cpu_count()} cores shared by the plane, its servers, the agent and the client)")


if __name__ == "__main__":
    main()
