"""X.509-SVID minting rate: the agent API per key-manager backend, beside OpenBao PKI and raw code.

Prints, from one run on one machine, SVIDs per second for:
  raw cryptography: CSR parse + check + leaf build + sign in this process (one core's ceiling),
  and in one process per core at once (the machine's ceiling for Python minting)
  OpenBao PKI `sign` (a Go CA doing the same job from the same CSRs), 1 and 4 client processes
  Hallmark agent API (`hallmark up` with N agent-API processes on one port), BatchNewX509SVID
  of 100 CSRs a call, per backend (vault = OpenBao transit, pkcs11 = SoftHSM2), from 1 agent
  and from many agents spread over client processes: CSRs in over mTLS, chains out
and, for each, the cores each part of the machine kept busy, the ratio to OpenBao PKI's best
figure, and whether each backend reaches the goal of twice that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import tempfile
import time
from pathlib import Path

import hvac
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks import mint_clients
from hallmark.signing import LocalSigner
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import (
    LeafRequest,
    build_leaf,
    build_signing_certificate,
    make_csr,
    public_key_from_csr,
    utcnow,
)

BATCH = 100
PKI_MOUNT = "bench-pki"
GOAL = 2.0
BACKENDS = ("vault", "pkcs11")


def _csrs(count: int) -> list[bytes]:
    return [make_csr(ec.generate_private_key(ec.SECP256R1())) for _ in range(count)]


def raw_rate(csrs: list[bytes], seconds: float) -> float:
    td = TrustDomain("raw.test")
    signer = LocalSigner.generate()
    now = utcnow()
    ca = build_signing_certificate(
        trust_domain=td,
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now,
        not_after=now + dt.timedelta(days=1),
    )
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for csr in csrs:
            key = public_key_from_csr(csr)
            build_leaf(
                LeafRequest(td.spiffe_id(f"/w{done}"), key, dt.timedelta(hours=1)),
                ca=ca,
                signer=signer,
            )
            done += 1
    return done / (time.perf_counter() - started)


def raw_rate_on_every_core(csrs: list[bytes], seconds: float) -> float:
    """`raw_rate` in one process per core at once: what the machine can mint in Python."""
    import multiprocessing

    cores = os.cpu_count() or 1
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        return sum(pool.starmap(raw_rate, [(csrs, seconds)] * cores))


def prepare_pki_mount(address: str, token: str) -> None:
    """A PKI mount with an EC root and a role that signs SPIFFE-style leaves from CSRs."""
    admin = hvac.Client(url=address, token=token)
    if f"{PKI_MOUNT}/" in admin.sys.list_mounted_secrets_engines()["data"]:
        return
    admin.sys.enable_secrets_engine("pki", path=PKI_MOUNT, config={"max_lease_ttl": "87600h"})
    admin.secrets.pki.generate_root(
        "internal",
        "bench root",
        mount_point=PKI_MOUNT,
        extra_params={"key_type": "ec", "key_bits": 256},
    )
    admin.secrets.pki.create_or_update_role(
        "svid",
        mount_point=PKI_MOUNT,
        extra_params={
            "allow_any_name": True,
            "allowed_uri_sans": "spiffe://*",
            "enforce_hostnames": False,
            "require_cn": False,
            "key_type": "ec",
            "key_bits": 256,
            "ttl": "1h",
            "no_store": True,
            "generate_lease": False,
        },
    )


def _pem_csr(der: bytes) -> str:
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM).decode()


def _tenant(url: str, label: str) -> dict[str, str]:
    td = f"{label}-{secrets.token_hex(3)}.test"
    answer = requests.post(
        f"{url}/api/v1/signup",
        timeout=60,
        json={
            "name": label,
            "trust_domain": td,
            "email": f"ops@{td}",
            "password": "correct horse battery staple",
        },
    )
    answer.raise_for_status()
    token = answer.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    alias = f"spiffe://{td}/node/bench"
    for i in range(BATCH):
        requests.post(
            f"{url}/api/v1/entries",
            headers=headers,
            timeout=30,
            json={
                "spiffe_id": f"spiffe://{td}/w/{i}",
                "parent_id": alias,
                "selectors": [f"unix:uid:{1000 + i}"],
            },
        ).raise_for_status()
    return {"trust_domain": td, "token": token}


# -- where the cores went -------------------------------------------------------------------------
_PARTS = (
    ("agent-api", "agent-api"),
    ("bao", "openbao"),
    ("postgres", "postgres"),
    ("redis", "redis"),
    ("gunicorn", "web"),
    ("celery", "celery"),
)


def _cpu_by_part(plane_pid: int, work: Path) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process of the plane (its tree and its embedded servers)."""
    import psutil

    found: dict[int, tuple[str, float]] = {}
    tree = [psutil.Process(plane_pid), *psutil.Process(plane_pid).children(recursive=True)]
    strays = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(work) in " ".join(p.info["cmdline"] or ())
    ]
    for process in {p.pid: p for p in [*tree, *strays]}.values():
        try:
            cmdline = " ".join(process.cmdline())
            times = process.cpu_times()
        except psutil.Error:
            continue
        part = next((name for key, name in _PARTS if key in cmdline), "other")
        found[process.pid] = (part, times.user + times.system)
    return found


def _cores(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float
) -> dict[str, float]:
    cores: dict[str, float] = {}
    for pid, (part, cpu) in after.items():
        spent = cpu - before.get(pid, (part, 0.0))[1]
        cores[part] = cores.get(part, 0.0) + spent / seconds
    return cores


class Report:
    """The figures as they are measured, then the summary against OpenBao PKI."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

    def add(self, label: str, rate: float, cores: dict[str, float] | None = None) -> None:
        busy = ""
        if cores:
            ranked = sorted(cores.items(), key=lambda kv: -kv[1])
            busy = "cores busy: " + ", ".join(f"{k} {v:.2f}" for k, v in ranked if v >= 0.01)
        self.rows.append((label, rate, busy))
        print(f"  {label:<46} {rate:8,.0f} SVIDs/s   {busy}", flush=True)

    def summary(self, processes: int) -> None:
        pki = max(r for label, r, _ in self.rows if label.startswith("OpenBao PKI"))
        print(f"\nSVIDs/s; ratio to OpenBao PKI's best ({pki:,.0f}/s, same run):")
        for label, rate, _ in self.rows:
            print(f"  {label:<46} {rate:8,.0f}   {rate / pki:5.2f}x")
        print(f"\ngoal: each backend >= {GOAL:.0f}x OpenBao PKI = {GOAL * pki:,.0f} SVIDs/s")
        for backend in BACKENDS:
            mine = [(r, label) for label, r, _ in self.rows if f", {backend}," in label]
            if not mine:
                continue
            rate, label = max(mine)
            verdict = "MET" if rate >= GOAL * pki else "NOT MET"
            print(f"  {backend:<7} {verdict:<8} best {rate:,.0f}/s = {rate / pki:.2f}x ({label})")
        print(f"  ({processes} agent-API processes; {os.cpu_count()} cores shared by everything)")


def _agent_api_processes(plane_pid: int) -> int:
    import psutil

    children = psutil.Process(plane_pid).children()
    return sum(1 for c in children if "agent-api" in " ".join(c.cmdline()))


def main() -> None:
    from benchmarks.workload_api import start_control_plane  # same start-up, one place

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument(
        "--agent-api-processes",
        type=int,
        default=None,
        help="agent-API processes of `hallmark up` (default: HALLMARK_AGENT_API_PROCESSES, 2)",
    )
    parser.add_argument(
        "--agents", type=int, default=16, help="agents (connections) for the many-agents figure"
    )
    parser.add_argument(
        "--client-processes", type=int, default=4, help="processes the many agents run in"
    )
    args = parser.parse_args()
    if args.agent_api_processes is not None:
        os.environ["HALLMARK_AGENT_API_PROCESSES"] = str(args.agent_api_processes)
    work = Path(tempfile.mkdtemp(prefix="hallmark-mint-"))
    print(f"working in {work}", flush=True)
    csrs = _csrs(BATCH)
    report = Report()
    report.add("raw cryptography, 1 core, in-process", raw_rate(csrs, args.seconds))
    report.add(
        f"raw cryptography, {os.cpu_count()} processes at once",
        raw_rate_on_every_core(csrs, args.seconds),
    )

    tenants: dict[str, dict[str, str]] = {}
    for backend in BACKENDS:  # a tenant's backend is chosen at signup
        os.environ["HALLMARK_DEFAULT_KEY_MANAGER"] = backend
        plane, url, grpc_address = start_control_plane(work)
        tenants[backend] = _tenant(url, f"mint-{backend}")
        plane.terminate()
        plane.wait(timeout=60)
    os.environ.pop("HALLMARK_DEFAULT_KEY_MANAGER")
    plane, url, grpc_address = start_control_plane(work)
    processes = _agent_api_processes(plane.pid)
    print(f"hallmark up with {processes} agent-API processes on {grpc_address}", flush=True)

    def measure(label: str, jobs: list[mint_clients.AgentJob] | list[mint_clients.PkiJob]) -> None:
        def watch() -> tuple[float, dict[int, tuple[str, float]]]:
            return time.monotonic(), _cpu_by_part(plane.pid, work)

        measurement = mint_clients.run(jobs, args.seconds, watch)
        (started, before), (finished, after) = measurement.watched
        cores = _cores(before, after, finished - started)
        cores["clients"] = measurement.client_cores
        report.add(label, measurement.rate, cores)

    try:
        init = json.loads((work / "plane" / "openbao" / "init.json").read_text())
        ports = json.loads((work / "plane" / "openbao" / "ports.json").read_text())
        bao = f"http://127.0.0.1:{ports['api']}"
        prepare_pki_mount(bao, init["root_token"])
        pems = tuple(_pem_csr(c) for c in csrs)
        for clients in (1, 4):
            job = mint_clients.PkiJob(bao, init["root_token"], PKI_MOUNT, pems)
            measure(f"OpenBao PKI sign, {clients} client process(es)", [job] * clients)
        for backend, tenant in tenants.items():
            for agents, spread in ((1, 1), (args.agents, args.client_processes)):

                def job(count: int, tenant: dict[str, str] = tenant) -> mint_clients.AgentJob:
                    return mint_clients.AgentJob(
                        url,
                        grpc_address,
                        tenant["trust_domain"],
                        tenant["token"],
                        tuple(csrs),
                        count,
                    )

                counts = [agents // spread + (i < agents % spread) for i in range(spread)]
                measure(
                    f"agent API, {backend}, {agents} agent(s) in {spread} process(es)",
                    [job(c) for c in counts if c],
                )
    finally:
        plane.terminate()
        plane.wait(timeout=60)
    report.summary(processes)


if __name__ == "__main__":
    main()
