"""X.509-SVID minting rate: the agent API per key-manager backend, beside OpenBao PKI and raw code.

Prints, from one run on one machine, SVIDs per second for:
  raw cryptography: CSR parse + check + leaf build + sign in this process (the ceiling)
  OpenBao PKI `sign` (a Go CA doing the same job), 1 client and 4 clients
  Hallmark agent API, BatchNewX509SVID of 100 CSRs a call, per backend (vault transit,
  pkcs11/SoftHSM2), with 1 and 4 concurrent agents: CSRs in over mTLS, chains out
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import tempfile
import time
from concurrent import futures
from pathlib import Path

import hvac
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.client import AgentClient
from agent.state import X509Svid
from hallmark.bundle import Bundle
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


def openbao_pki_rate(
    address: str, token: str, csrs: list[bytes], seconds: float, clients: int
) -> float:
    admin = hvac.Client(url=address, token=token)
    mount = "bench-pki"
    if f"{mount}/" not in admin.sys.list_mounted_secrets_engines()["data"]:
        admin.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
        admin.secrets.pki.generate_root(
            "internal",
            "bench root",
            mount_point=mount,
            extra_params={"key_type": "ec", "key_bits": 256},
        )
        admin.secrets.pki.create_or_update_role(
            "svid",
            mount_point=mount,
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
    pems = [_pem_csr(c) for c in csrs]
    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> int:
        client = hvac.Client(url=address, token=token)
        count = 0
        while time.perf_counter() < deadline:
            client.secrets.pki.sign_certificate(
                "svid",
                pems[(offset + count) % len(pems)],
                "",
                mount_point=mount,
                extra_params={"uri_sans": f"spiffe://pki.test/w{count}"},
            )
            count += 1
        return count

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(worker, range(clients)))
    return total / (time.perf_counter() - started)


def _pem_csr(der: bytes) -> str:
    from cryptography import x509

    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM).decode()


async def _agent(url: str, grpc_address: str, td: str, api_token: str, alias: str) -> AgentClient:
    headers = {"Authorization": f"Bearer {api_token}"}
    join = requests.post(
        f"{url}/api/v1/join-tokens",
        headers=headers,
        timeout=30,
        json={"ttl": 600, "spiffe_id": alias},
    ).json()["token"]
    trust_domain = TrustDomain(td)
    bundle = Bundle.parse(trust_domain, requests.get(f"{url}/bundle/{td}", timeout=30).content)
    client = AgentClient(grpc_address, trust_domain)
    await client.configure(bundle, None)
    key = ec.generate_private_key(ec.SECP256R1())
    attestation = await client.attest(join, make_csr(key))
    await client.configure(attestation.bundle, X509Svid(attestation.chain, key))
    return client


async def agent_api_rate(
    url: str,
    grpc_address: str,
    tenant: dict[str, str],
    csrs: list[bytes],
    *,
    seconds: float,
    agents: int,
) -> float:
    td, api_token = tenant["trust_domain"], tenant["token"]
    alias = f"spiffe://{td}/node/bench"
    clients = [await _agent(url, grpc_address, td, api_token, alias) for _ in range(agents)]
    page = await clients[0].sync_authorized_entries(0, 5000)
    entry_ids = [entry.id for entry in page.entries][:BATCH]
    batch = dict(zip(entry_ids, csrs, strict=False))
    for client in clients:  # warm up: TLS session, server-side caches
        await client.batch_new_x509_svid(batch)
    deadline = time.perf_counter() + seconds

    async def run(client: AgentClient) -> int:
        count = 0
        while time.perf_counter() < deadline:
            results = await client.batch_new_x509_svid(batch)
            bad = [r for r in results if r.error_code]
            if bad:
                raise SystemExit(f"minting failed: {bad[0].error_code}: {bad[0].error}")
            count += len(results)
        return count

    started = time.perf_counter()
    total = sum(await asyncio.gather(*(run(c) for c in clients)))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    return total / elapsed


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


def main() -> None:
    from benchmarks.workload_api import start_control_plane  # same start-up, one place

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hallmark-mint-"))
    print(f"working in {work}", flush=True)
    csrs = _csrs(BATCH)
    results: list[tuple[str, float]] = [("raw cryptography, 1 core", raw_rate(csrs, args.seconds))]

    tenants: dict[str, dict[str, str]] = {}
    for backend in ("vault", "pkcs11"):
        os.environ["HALLMARK_DEFAULT_KEY_MANAGER"] = backend
        plane, url, grpc_address = start_control_plane(work)
        tenants[backend] = _tenant(url, f"mint-{backend}")
        plane.terminate()
        plane.wait(timeout=60)
    os.environ.pop("HALLMARK_DEFAULT_KEY_MANAGER")
    plane, url, grpc_address = start_control_plane(work)
    try:
        init = json.loads((work / "plane" / "openbao" / "init.json").read_text())
        ports = json.loads((work / "plane" / "openbao" / "ports.json").read_text())
        bao = f"http://127.0.0.1:{ports['api']}"
        for clients in (1, 4):
            rate = openbao_pki_rate(bao, init["root_token"], csrs, args.seconds, clients)
            results.append((f"OpenBao PKI sign, {clients} client(s)", rate))
        for backend, tenant in tenants.items():
            for agents in (1, 4):
                rate = asyncio.run(
                    agent_api_rate(
                        url, grpc_address, tenant, csrs, seconds=args.seconds, agents=agents
                    )
                )
                results.append((f"agent API, {backend}, {agents} agent(s)", rate))
    finally:
        plane.terminate()
        plane.wait(timeout=60)
    print()
    for label, rate in results:
        print(f"{label:<40} {rate:10,.0f} SVIDs/s")


if __name__ == "__main__":
    main()
