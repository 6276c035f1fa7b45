"""A kubelet stand-in: its secure port's `GET /pods` over HTTPS, with bearer-token auth.

The kubelet authenticates a bearer token by TokenReview and authorizes `nodes/proxy`; this
stand-in accepts the tokens it is given and answers 401 `Unauthorized` to any other, as the
kubelet does. Its TLS certificate is for `localhost` and 127.0.0.1, signed by its own CA
(the cluster CA of this test). The PodList is the kubelet's JSON shape (trimmed of fields
nothing reads). `hide_container_status` keeps the caller's container status out of the
first N answers, as a kubelet whose status manager has not caught up yet.
"""

from __future__ import annotations

import copy
import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.attestors.cgroup_trees import CRIO_CONTAINER_ID, K8S_CONTAINER_ID, POD_UID

NODE_NAME = "worker-eu-1"
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImFnZW50In0.agent-service-account.signature"  # noqa: S105


def billing_pod(runtime: str = "containerd") -> dict[str, Any]:
    """A ReplicaSet's pod in namespace `payments`, one app container and one init container."""
    container_id = K8S_CONTAINER_ID if runtime != "cri-o" else CRIO_CONTAINER_ID
    return {
        "metadata": {
            "name": "billing-7d9f8b6c5-x2x7k",
            "generateName": "billing-7d9f8b6c5-",
            "namespace": "payments",
            "uid": POD_UID,
            "resourceVersion": "918274",
            "creationTimestamp": "2026-11-29T20:02:11Z",
            "labels": {"app": "billing", "pod-template-hash": "7d9f8b6c5", "tier": "backend"},
            "annotations": {"kubernetes.io/config.seen": "2026-11-29T20:02:11.402Z"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "billing-7d9f8b6c5",
                    "uid": "0b7c3f2e-9a1d-4c5e-8f6a-2d4b6c8e0f1a",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "volumes": [{"name": "spiffe", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}],
            "initContainers": [{"name": "migrate", "image": "ghcr.io/acme/billing-migrate:1.4.2"}],
            "containers": [
                {
                    "name": "billing",
                    "image": "ghcr.io/acme/billing:1.4.2",
                    "ports": [{"containerPort": 8443, "protocol": "TCP"}],
                    "volumeMounts": [{"name": "spiffe", "mountPath": "/run/spire/sockets"}],
                }
            ],
            "restartPolicy": "Always",
            "serviceAccountName": "billing",
            "serviceAccount": "billing",
            "nodeName": NODE_NAME,
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.12.7",
            "podIP": "10.244.3.18",
            "startTime": "2026-11-29T20:02:11Z",
            "initContainerStatuses": [
                {
                    "name": "migrate",
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    "ready": True,
                    "restartCount": 0,
                    "image": "ghcr.io/acme/billing-migrate:1.4.2",
                    "imageID": "ghcr.io/acme/billing-migrate@sha256:"
                    "8a0c2e4f6b8d0a2c4e6f8b0d2a4c6e8f0b2d4a6c8e0f2b4d6a8c0e2f4b6d8a0c",
                    "containerID": f"{runtime}://" + "1" * 64,
                }
            ],
            "containerStatuses": [
                {
                    "name": "billing",
                    "state": {"running": {"startedAt": "2026-11-29T20:02:14Z"}},
                    "ready": True,
                    "restartCount": 0,
                    "image": "ghcr.io/acme/billing:1.4.2",
                    "imageID": "ghcr.io/acme/billing@sha256:"
                    "5d7f9b1c3e5a7d9f1b3c5e7a9d1f3b5c7e9a1d3f5b7c9e1a3d5f7b9c1e3a5d7f",
                    "containerID": f"{runtime}://{container_id}",
                    "started": True,
                }
            ],
            "qosClass": "Burstable",
        },
    }


def other_pod() -> dict[str, Any]:
    """Another pod on the node (kube-system's DNS), which no test caller runs in."""
    pod = billing_pod()
    pod["metadata"].update(
        name="coredns-5d78c9869d-7bq4w",
        namespace="kube-system",
        uid="5e7a9c1b-3d5f-4a7c-9e1b-3d5f7a9c1e3b",
        labels={"k8s-app": "kube-dns"},
    )
    pod["spec"]["serviceAccountName"] = "coredns"
    pod["status"]["containerStatuses"][0]["containerID"] = "containerd://" + "2" * 64
    return pod


def pod_list(pods: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}


@dataclass
class KubeletPki:
    """The test cluster's CA and the kubelet's serving certificate, as files."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def make_pki(directory: Path) -> KubeletPki:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{NODE_NAME}@1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(NODE_NAME),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pki = KubeletPki(directory / "ca.crt", directory / "kubelet.crt", directory / "kubelet.key")
    pki.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeKubelet
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        authorization = self.headers.get("Authorization", "")
        with self.server.lock:
            self.server.requests.append((self.path, authorization))
            accepted = authorization.removeprefix("Bearer ") in self.server.tokens
            answer = self.server.answer_pods()
        if not authorization.startswith("Bearer ") or not accepted:
            self._send(401, b"Unauthorized", "text/plain; charset=utf-8")
            return
        if self.path != "/pods":
            self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        self._send(200, json.dumps(answer).encode(), "application/json")


class FakeKubelet(http.server.ThreadingHTTPServer):
    """The kubelet's secure port on 127.0.0.1 (an ephemeral port)."""

    daemon_threads = True

    def __init__(self, pki: KubeletPki) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_path, pki.key_path)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.lock = threading.Lock()
        self.tokens = {TOKEN}
        self.pods = [other_pod(), billing_pod()]
        self.requests: list[tuple[str, str]] = []
        self.hide_container_status = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def answer_pods(self) -> dict[str, Any]:
        pods = copy.deepcopy(self.pods)
        if self.hide_container_status > 0:
            self.hide_container_status -= 1
            for pod in pods:
                pod["status"]["containerStatuses"] = []
        return pod_list(pods)


@contextmanager
def fake_kubelet(directory: Path) -> Iterator[tuple[FakeKubelet, KubeletPki]]:
    pki = make_pki(directory)
    server = FakeKubelet(pki)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server, pki
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
