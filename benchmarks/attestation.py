"""Node attestation rate per attestor type against one agent-API process.

Prints, from one run of a real `hallmark up` with HALLMARK_AGENT_API_PROCESSES=1 (embedded
PostgreSQL, Redis, OpenBao): attestations/s for join_token, x509pop and sshpop
(challenge/response over the bidirectional stream), k8s_psat (token checked against the
cluster's JWKS) and aws_iid (signed instance identity document), each with
--concurrency conversations in flight, every one a new TLS connection as a new agent makes
it, a fresh key and CSR, and a distinct proof (token, node certificate, projected token).

Run: `.venv/bin/python -m benchmarks.attestation [--count 300] [--concurrency 8]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import ssh
from cryptography.x509.oid import NameOID

from attestors.node.base import AgentAttestor
from attestors.node.join_token import JoinTokenAgent
from attestors.node.sshpop import SshPopAgent
from attestors.node.x509pop import X509PopAgent
from hallmark.protos import agent_pb2, agent_pb2_grpc
from hallmark.x509svid import make_csr


def _signup(url: str) -> tuple[str, str]:
    td = f"attest-{secrets.token_hex(3)}.test"
    answer = requests.post(
        f"{url}/api/v1/signup",
        timeout=60,
        json={
            "name": "attestation bench",
            "trust_domain": td,
            "email": f"ops@{td}",
            "password": "correct horse battery staple",
        },
    )
    answer.raise_for_status()
    return td, answer.json()["token"]


def _certificate(
    subject: str, key: Any, issuer: tuple[x509.Name, Any] | None, *, ca: bool
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer[1] if issuer else key, hashes.SHA256())
    )


class DocumentAgent(AgentAttestor):
    """An instance identity document already read from IMDS."""

    type = "aws_iid"

    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    def payload(self) -> bytes:
        return self._payload


def _aws(count: int) -> tuple[str, list[AgentAttestor]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = _certificate("AWS test signer", key, None, ca=False)
    made: list[AgentAttestor] = []
    for _ in range(count):
        document = json.dumps(
            {
                "accountId": "123456789012",
                "availabilityZone": "us-west-2b",
                "imageId": "ami-0abcdef1234567890",
                "instanceId": f"i-{secrets.token_hex(8)}",
                "region": "us-west-2",
                "version": "2017-09-30",
            },
            indent=2,
        )
        signature = key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256())
        payload = {"document": document, "signature": base64.b64encode(signature).decode()}
        made.append(DocumentAgent(json.dumps(payload).encode()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), made


def _ssh_hosts(count: int) -> tuple[str, list[AgentAttestor]]:
    ca = ed25519.Ed25519PrivateKey.generate()
    now = int(time.time())
    made: list[AgentAttestor] = []
    for i in range(count):
        host = ed25519.Ed25519PrivateKey.generate()
        certificate = (
            ssh.SSHCertificateBuilder()
            .public_key(host.public_key())
            .serial(i + 1)
            .type(ssh.SSHCertificateType.HOST)
            .key_id(f"host-{i}".encode())
            .valid_principals([f"host-{i}.bench.example".encode()])
            .valid_after(now - 60)
            .valid_before(now + 3600)
            .sign(ca)
        )
        made.append(SshPopAgent(certificate.public_bytes().decode(), host))
    authority = ca.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return authority.decode(), made


class PsatAgent(AgentAttestor):
    type = "k8s_psat"

    def __init__(self, token: str) -> None:
        self.token = token

    def payload(self) -> bytes:
        return json.dumps({"cluster": "bench", "token": self.token}).encode()


def _psat_tokens(count: int) -> tuple[dict[str, Any], list[str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "bench", "use": "sig", "alg": "RS256"})
    now = int(time.time())
    tokens = []
    for _ in range(count):
        pod, node = str(uuid.uuid4()), str(uuid.uuid4())
        claims = {
            "aud": ["spire-server"],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "kubernetes.io": {
                "namespace": "spire",
                "node": {"name": f"node-{node[:6]}", "uid": node},
                "pod": {"name": f"spire-agent-{pod[:5]}", "uid": pod},
                "serviceaccount": {"name": "spire-agent", "uid": str(uuid.uuid4())},
            },
            "sub": "system:serviceaccount:spire:spire-agent",
        }
        tokens.append(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"}))
    return {"keys": [jwk]}, tokens


async def _attest(grpc_address: str, td: str, roots: bytes, attestor: AgentAttestor) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    async with grpc.aio.secure_channel(
        grpc_address,
        credentials,
        options=[("grpc.ssl_target_name_override", td), ("grpc.default_authority", td)],
    ) as channel:
        stub = agent_pb2_grpc.AgentAPIStub(channel)
        call = stub.AttestAgent(metadata=(("x-hallmark-trust-domain", td),), timeout=60)
        csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
        await call.write(
            agent_pb2.AttestAgentRequest(
                trust_domain=td,
                attestation_type=attestor.type,
                attestation_data=attestor.payload(),
                csr=csr,
            )
        )
        answer = await call.read()
        if answer.challenge:
            response = attestor.respond(bytes(answer.challenge))
            await call.write(agent_pb2.AttestAgentRequest(challenge_response=response))
            answer = await call.read()
        await call.done_writing()
        if answer is grpc.aio.EOF or not answer.spiffe_id:
            raise SystemExit(f"attestation did not succeed: {await call.details()}")


async def _run(
    grpc_address: str, td: str, roots: bytes, attestors: list[AgentAttestor], concurrency: int
) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(attestor: AgentAttestor) -> None:
        async with gate:
            await _attest(grpc_address, td, roots, attestor)

    started = time.perf_counter()
    await asyncio.gather(*(one(a) for a in attestors))
    return time.perf_counter() - started


def main() -> None:
    from benchmarks.workload_api import start_control_plane

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="attestations per type")
    parser.add_argument("--concurrency", type=int, default=8, help="conversations in flight")
    args = parser.parse_args()
    os.environ["HALLMARK_AGENT_API_PROCESSES"] = "1"
    work = Path(tempfile.mkdtemp(prefix="hallmark-attestation-"))
    print(f"working in {work}", flush=True)
    plane, url, grpc_address = start_control_plane(work)
    try:
        td, token = _signup(url)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        roots = session.get(f"{url}/api/v1/bundle?format=pem", timeout=30).content

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("bench fleet CA", ca_key, None, ca=True)
        jwks, psat_tokens = _psat_tokens(args.count + 20)
        aws_pem, aws_agents = _aws(args.count + 10)
        ssh_ca, ssh_agents = _ssh_hosts(args.count + 10)
        for kind, config in (
            ("aws_iid", {"aws_certificates_pem": aws_pem, "account_allow_list": ["123456789012"]}),
            ("sshpop", {"cert_authorities": [ssh_ca]}),
            ("x509pop", {"ca_bundle_pem": ca.public_bytes(serialization.Encoding.PEM).decode()}),
            (
                "k8s_psat",
                {
                    "clusters": {
                        "bench": {
                            "service_account_allow_list": ["spire:spire-agent"],
                            "jwks": jwks,
                        }
                    }
                },
            ),
        ):
            session.post(
                f"{url}/api/v1/node-attestors", json={"type": kind, "config": config}, timeout=30
            ).raise_for_status()

        def join_tokens(n: int) -> list[AgentAttestor]:
            return [
                JoinTokenAgent(
                    session.post(
                        f"{url}/api/v1/join-tokens", json={"ttl": 3600}, timeout=30
                    ).json()["token"]
                )
                for _ in range(n)
            ]

        def nodes(n: int) -> list[AgentAttestor]:
            made: list[AgentAttestor] = []
            for i in range(n):
                key = ec.generate_private_key(ec.SECP256R1())
                leaf = _certificate(
                    f"node-{i}-{secrets.token_hex(3)}", key, (ca.subject, ca_key), ca=False
                )
                made.append(X509PopAgent([leaf], key))
            return made

        psat_iter = iter(psat_tokens)

        def psats(n: int) -> list[AgentAttestor]:
            return [PsatAgent(next(psat_iter)) for _ in range(n)]

        def taken(pool: list[AgentAttestor]) -> Callable[[int], list[AgentAttestor]]:
            def take(n: int) -> list[AgentAttestor]:
                batch = pool[:n]
                del pool[:n]
                return batch

            return take

        kinds: list[tuple[str, Callable[[int], list[AgentAttestor]]]] = [
            ("join_token", join_tokens),
            ("x509pop", nodes),
            ("sshpop", taken(ssh_agents)),
            ("k8s_psat", psats),
            ("aws_iid", taken(aws_agents)),
        ]
        print(
            f"one agent-API process, {args.count} attestations a type, "
            f"{args.concurrency} in flight, a new TLS connection each:",
            flush=True,
        )
        for kind, make in kinds:
            asyncio.run(_run(grpc_address, td, roots, make(10), args.concurrency))  # warm up
            batch = make(args.count)
            seconds = asyncio.run(_run(grpc_address, td, roots, batch, args.concurrency))
            print(
                f"  {kind:<11} {args.count / seconds:8,.1f} attestations/s "
                f"({seconds * 1000 / args.count:6.1f} ms each on average)",
                flush=True,
            )
    finally:
        plane.terminate()
        plane.wait(timeout=60)


if __name__ == "__main__":
    main()
