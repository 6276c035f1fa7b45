"""hallmark-registrar at cluster scale: 10,000 pods reconciled end to end.

From one run of a real `hallmark up` (embedded PostgreSQL, Redis, OpenBao), the fake
Kubernetes API of the tests (HTTPS, list + chunked watch) holding --pods pods, and an agent
(its own process: the agent's AgentClient and sync code over mTLS, following WatchUpdates
pushes) joined under the node alias every pod is scheduled on. Prints:
  cold start   the registrar starts against a cluster of --pods pods: the time to list the
               cluster (paged, 500 a page), until every entry is stored (batch-create, 500 a
               call), and until the agent held them all
  no-op resync a full resync with nothing to change (the cluster listed again, the entries
               read and compared)
  rollout      --churn pods replaced (deleted, and as many new ones added, through the watch):
               until the plane's entries are in step again
  restart      a new registrar over the same cluster and entries: until its first reconcile
               ends (it must change nothing)

Run: `.venv/bin/python -m benchmarks.registrar [--pods 10000] [--churn 1000]`.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.registration import AGENT_TIMEOUT, _agent, _signup  # noqa: E402
from registrar.controller import Registrar, Settings  # noqa: E402
from registrar.hallmark_api import HallmarkApi  # noqa: E402
from registrar.kube import KubeClient, KubeConfig  # noqa: E402
from tests.registrar.fake_kube_api import (  # noqa: E402
    CLUSTER_SPIFFE_IDS,
    NAMESPACES,
    PODS,
    cluster_spiffe_id,
    fake_kube_api,
    namespace,
    pod,
)

CLUSTER = "bench"
NODE = "worker-bench-1"


def _wait(check: Any, what: str, timeout: float = 600.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


def _registrar(kube: Any, url: str, token: str, work: Path) -> Registrar:
    return Registrar(
        KubeClient(KubeConfig.from_kubeconfig(kube.kubeconfig(work))),
        HallmarkApi(url, token),
        Settings(cluster_name=CLUSTER, resync=3600.0, settle=0.5),
    )


def _in_step(registrar: Registrar, started: int) -> bool:
    return registrar.reconciles > started and registrar.idle.is_set()


def main() -> None:  # noqa: PLR0915 - one linear scenario
    from benchmarks.workload_api import start_control_plane

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000, help="pods in the cluster")
    parser.add_argument("--churn", type=int, default=1000, help="pods replaced in the rollout")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="hallmark-registrar-bench-"))
    print(f"working in {work}", flush=True)
    plane, url, grpc = start_control_plane(work)
    try:
        td, owner = _signup(url)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {owner}"
        made = session.post(
            f"{url}/api/v1/api-tokens",
            json={"name": "bench", "role": "registrar", "spiffe_id_prefix": f"spiffe://{td}/ns/"},
        )
        made.raise_for_status()
        alias = f"spiffe://{td}/k8s-node/{CLUSTER}/{NODE}"
        join = session.post(f"{url}/api/v1/join-tokens", json={"ttl": 600, "spiffe_id": alias})
        join.raise_for_status()

        context = multiprocessing.get_context("spawn")
        ready, results = context.Event(), context.Queue()
        job = {
            "url": url,
            "grpc": grpc,
            "trust_domain": td,
            "join_token": join.json()["token"],
            "want": args.pods,
        }
        agent = context.Process(target=_agent, args=(job, ready, results), daemon=True)
        agent.start()
        if not ready.wait(timeout=120):
            raise SystemExit("the agent did not attest and subscribe in 120 s")

        with fake_kube_api(work / "kube") as kube:
            kube.add(NAMESPACES, namespace("shop"))
            kube.add(
                CLUSTER_SPIFFE_IDS,
                cluster_spiffe_id(
                    "default",
                    spiffeIDTemplate="spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}"
                    "/pod/{{ .PodMeta.Name }}",
                    workloadSelectorTemplates=["k8s:ns:{{ .PodMeta.Namespace }}"],
                    dnsNameTemplates=["{{ .PodMeta.Name }}.shop.svc.{{ .ClusterDomain }}"],
                ),
            )
            for i in range(args.pods):
                kube.add(PODS, pod(f"shop-{i // 50:04d}-{i:05d}", namespace="shop", node=NODE))

            # cold start
            registrar = _registrar(kube, url, made.json()["token"], work)
            started = time.monotonic()
            registrar.start()
            listed = _wait(registrar.synced, "the lists") - started
            stored = _wait(lambda: _in_step(registrar, 0), "the entries") - started
            outcome = registrar.last
            assert outcome is not None and outcome.created == args.pods, outcome
            try:
                answer = results.get(timeout=AGENT_TIMEOUT)
            except queue.Empty:
                raise SystemExit(f"the agent did not hold {args.pods} entries") from None
            if isinstance(answer, str):
                raise SystemExit(answer)
            agent.join(timeout=30)
            held = answer["at"] - started
            print(
                f"  cold start, {args.pods:,} pods: listed in {listed:.2f} s; "
                f"{outcome.created:,} entries stored after {stored:.2f} s "
                f"({args.pods / stored:,.0f} pods/s); the agent held all {answer['held']:,} "
                f"after {held:.2f} s ({answer['pushes']} pushes, {answer['syncs']} syncs)",
                flush=True,
            )

            # no-op resync
            took = time.monotonic()
            outcome = registrar.reconcile_once(full=True)
            took = time.monotonic() - took
            assert outcome.unchanged == args.pods and not outcome.failures, outcome
            print(f"  no-op full resync of {args.pods:,} pods/entries: {took:.2f} s", flush=True)

            # rollout
            count = registrar.reconciles
            base = dict(registrar.totals)
            took = time.monotonic()
            for uid in list(kube.objects[PODS])[: args.churn]:
                kube.delete(PODS, kube.objects[PODS][uid])
            for i in range(args.churn):
                kube.add(PODS, pod(f"shop-new-{i:05d}", namespace="shop", node=NODE))
            _wait(
                lambda: (
                    _in_step(registrar, count)
                    and registrar.totals["created"] - base["created"] == args.churn
                    and registrar.totals["deleted"] - base["deleted"] == args.churn
                ),
                "the rollout",
            )
            took = time.monotonic() - took
            print(
                f"  rollout, {args.churn:,} pods replaced: entries in step after {took:.2f} s "
                f"({registrar.reconciles - count} reconciles)",
                flush=True,
            )
            registrar.stop()

            # restart
            second = _registrar(kube, url, made.json()["token"], work / "second")
            took = time.monotonic()
            second.start()
            _wait(lambda: _in_step(second, 0), "the restart's reconcile")
            took = time.monotonic() - took
            last = second.last
            assert last is not None and last.created == last.deleted == last.updated == 0, last
            print(
                f"  restart over {args.pods:,} pods: first reconcile done after {took:.2f} s, "
                f"{last.unchanged:,} unchanged, nothing written",
                flush=True,
            )
            second.stop()
    finally:
        plane.terminate()
        plane.wait(timeout=60)
    print(f"  ({os.cpu_count()} cores shared by the plane, its servers, the agent, the fake")
    print("   Kubernetes API and the registrar)")


if __name__ == "__main__":
    main()
