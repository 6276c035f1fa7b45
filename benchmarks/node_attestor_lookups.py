"""What asking the cloud or cluster API costs a node attestation (server half, in process).

Prints p50/p99 of one server-half `attest()` through the platform's own `TenantLookup`
(address checks, a new TLS connection a request) for:
- k8s_psat with the token checked against inline keys, alone and with SPIRE's API-server
  lookups (GET the agent's Pod and Node, with label selectors);
- aws_iid with the document's signature alone, and with AWS credentials (EC2
  DescribeInstances, IAM GetInstanceProfile, SigV4-signed, XML parsed).
The stand-ins are tests/fakes/kubernetes.py and tests/fakes/aws.py (same wire protocol) on
loopback, so the figures are the platform's cost, not a real API's latency (add that: a
real API server or AWS endpoint answers in milliseconds to tens of milliseconds).

Run: `.venv/bin/python -m benchmarks.node_attestor_lookups [--calls 200]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any


def _django() -> None:
    """Django set up only so `TenantLookup` imports: no database or server is contacted."""
    os.environ.setdefault("HALLMARK_SECRET_KEY", "benchmark-" + uuid.uuid4().hex)
    for name, unused in (
        ("HALLMARK_DATABASE_URL", "postgres://unused@127.0.0.1:1/unused"),
        ("HALLMARK_REDIS_URL", "redis://127.0.0.1:1/0"),
        ("HALLMARK_VAULT_ADDR", "http://127.0.0.1:1"),
    ):
        os.environ.setdefault(name, unused)
    os.environ.setdefault("HALLMARK_LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()


def measure(label: str, call: Callable[[], object], calls: int) -> None:
    call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99) - 1]
    print(f"{label:<58} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   ({calls} calls)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    _django()
    from attestors.node.aws_iid import AwsIidServer
    from attestors.node.k8s_psat import K8sPsatServer
    from issuance.services.node_attestors import ALLOWED_NETWORKS_ENV, TenantLookup
    from tests.fakes.aws import AwsSigner, FakeAwsApi, instance_document
    from tests.fakes.kubernetes import FakeKubernetes, Pod

    os.environ[ALLOWED_NETWORKS_ENV] = "127.0.0.0/8"
    kube, aws = FakeKubernetes().start(), FakeAwsApi().start()
    try:
        pod = Pod()
        kube.schedule(pod, pod_labels={"app": "spire-agent"}, node_labels={"pool": "general"})
        cluster: dict[str, Any] = {
            "service_account_allow_list": ["spire:spire-agent"],
            "jwks": kube.jwks(),
        }
        api = {
            "api_server_url": kube.url,
            "api_server_token": kube.reviewer_token,
            "ca_bundle_pem": kube.ca_pem,
            "allowed_pod_label_keys": ["app"],
            "allowed_node_label_keys": ["pool"],
        }
        token = json.dumps({"cluster": "prod", "token": kube.token(pod)}).encode()

        def psat(config: dict[str, Any]) -> Callable[[], object]:
            server = K8sPsatServer({"clusters": {"prod": config}}, trust_domain="b.test")
            return lambda: server.attest(
                token, challenge=None, response=None, lookup=TenantLookup()
            )

        measure("k8s_psat, token against inline keys", psat(cluster), args.calls)
        measure("k8s_psat + API server (GET pod, GET node)", psat({**cluster, **api}), args.calls)

        signer = AwsSigner()
        document = instance_document()
        aws.add(
            document,
            tags={"Name": "web-1", "env": "prod"},
            security_groups=[("sg-0a1b2c3d4e5f60718", "web")],
            instance_profile="web-profile",
        )
        aws.profiles["web-profile"] = ["arn:aws:iam::123456789012:role/web-node"]
        payload = json.dumps({"document": document, "signature": signer.sign(document)}).encode()
        base = {"aws_certificates_pem": signer.pem, "account_allow_list": ["123456789012"]}
        credentials = {
            "access_key_id": aws.access_key_id,
            "secret_access_key": aws.secret_access_key,
            "ec2_endpoint_url": aws.url,
            "iam_endpoint_url": aws.url,
            "ca_bundle_pem": aws.ca_pem,
        }

        def iid(config: dict[str, Any]) -> Callable[[], object]:
            server = AwsIidServer(config, trust_domain="b.test")
            return lambda: server.attest(
                payload, challenge=None, response=None, lookup=TenantLookup()
            )

        measure("aws_iid, document signature", iid(base), args.calls)
        measure(
            "aws_iid + DescribeInstances + GetInstanceProfile",
            iid({**base, **credentials}),
            args.calls,
        )
        measure(
            "aws_iid + DescribeInstances (instance profile off)",
            iid({**base, **credentials, "disable_instance_profile_selectors": True}),
            args.calls,
        )
    finally:
        kube.stop()
        aws.stop()


if __name__ == "__main__":
    main()
