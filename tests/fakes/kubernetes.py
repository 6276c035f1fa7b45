"""A fake Kubernetes API server over HTTPS: OIDC discovery, JWKS, TokenReview, Pods and Nodes.

It speaks what a cluster's API server speaks: `GET /.well-known/openid-configuration`,
`GET /openid/v1/jwks`, `POST /apis/authentication.k8s.io/v1/tokenreviews` (bearer
authenticated) answering TokenReview JSON with `status.user.extra` as the API server fills it
for a bound (projected) service-account token, and (bearer authenticated too)
`GET /api/v1/namespaces/{ns}/pods/{name}` and `GET /api/v1/nodes/{name}` answering the Pod and
Node objects of the pods `schedule`d on it (a `Status` 404 for others). Tokens are minted as the API server mints
projected tokens: RS256, a `kid`, the `kubernetes.io` claim with namespace, pod, node and
service account.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.pki import TestCA, pem, serve, stop_serving
from tests.registrar.fake_kube_api import pod as pod_object

ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass
class Pod:
    """The agent pod a projected token is bound to."""

    namespace: str = "spire"
    service_account: str = "spire-agent"
    name: str = field(default_factory=lambda: f"spire-agent-{uuid.uuid4().hex[:5]}")
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    node_name: str = "worker-1"
    node_uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    service_account_uid: str = field(default_factory=lambda: str(uuid.uuid4()))


class FakeKubernetes:
    """An API server on 127.0.0.1 over HTTPS, with its own signing key and TLS CA."""

    def __init__(self, reviewer_token: str = "reviewer-secret") -> None:  # noqa: S107
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:16]
        self.reviewer_token = reviewer_token
        self.tls_ca = TestCA("fake kube-apiserver CA")
        self.requests: list[tuple[str, str]] = []
        self.objects: dict[str, dict[str, Any]] = {}  # API path -> Pod or Node object
        self._version = 4000
        self._server: ThreadingHTTPServer | None = None

    # -- tokens ----------------------------------------------------------------------------
    def token(
        self,
        pod: Pod,
        *,
        audience: list[str] | None = None,
        ttl: int = 3600,
        issued_at: dt.datetime | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        now = issued_at or dt.datetime.now(dt.UTC)
        iat = int(now.timestamp())
        claims = {
            "aud": audience or ["spire-server"],
            "exp": iat + ttl,
            "iat": iat,
            "nbf": iat,
            "iss": ISSUER,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": pod.namespace,
                "node": {"name": pod.node_name, "uid": pod.node_uid},
                "pod": {"name": pod.name, "uid": pod.uid},
                "serviceaccount": {"name": pod.service_account, "uid": pod.service_account_uid},
                "warnafter": iat + int(ttl * 0.8),
            },
            "sub": f"system:serviceaccount:{pod.namespace}:{pod.service_account}",
        }
        return jwt.encode(
            claims, key or self.signing_key, algorithm="RS256", headers={"kid": self.kid}
        )

    # -- objects the API server answers -------------------------------------------------
    def schedule(
        self,
        pod: Pod,
        *,
        pod_labels: dict[str, str] | None = None,
        node_labels: dict[str, str] | None = None,
        host_ip: str = "10.0.12.7",
    ) -> dict[str, Any]:
        """Make `pod` (and its node) exist; returns the Pod object as the API answers it."""
        obj = pod_object(
            pod.name,
            namespace=pod.namespace,
            service_account=pod.service_account,
            node=pod.node_name,
            labels=pod_labels if pod_labels is not None else {"app": "spire-agent"},
            uid=pod.uid,
        )
        obj["status"]["hostIP"] = host_ip
        obj["status"]["hostIPs"] = [{"ip": host_ip}]
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
        self.objects[path] = self._stamp("Pod", obj)
        self.objects[f"/api/v1/nodes/{pod.node_name}"] = self._stamp(
            "Node", node_object(pod.node_name, pod.node_uid, host_ip, node_labels)
        )
        return self.objects[path]

    def _stamp(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        return {"kind": kind, "apiVersion": "v1", **obj}

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.signing_key.public_key()))
        public.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [public]}

    # -- the API server ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_pem(self) -> str:
        return pem(self.tls_ca.cert)

    def start(self) -> FakeKubernetes:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(("GET", self.path))
                if self.path == "/.well-known/openid-configuration":
                    self._answer(
                        200,
                        {
                            "issuer": ISSUER,
                            "jwks_uri": f"{fake.url}/openid/v1/jwks",
                            "response_types_supported": ["id_token"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                        },
                    )
                elif self.path == "/openid/v1/jwks":
                    self._answer(200, fake.jwks())
                elif self.path.startswith(("/api/v1/namespaces/", "/api/v1/nodes/")):
                    if self.headers.get("Authorization") != f"Bearer {fake.reviewer_token}":
                        self._answer(401, _status_failure(401, "Unauthorized", "Unauthorized"))
                    elif self.path in fake.objects:
                        self._answer(200, fake.objects[self.path])
                    else:
                        kind, name = self.path.split("/")[-2:]
                        self._answer(
                            404, _status_failure(404, "NotFound", f'{kind} "{name}" not found')
                        )
                else:
                    self._answer(
                        404,
                        _status_failure(
                            404, "NotFound", "the server could not find the requested resource"
                        ),
                    )

            def do_POST(self) -> None:  # noqa: N802
                fake.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    self._answer(404, _status_failure(404, "NotFound", "not found"))
                    return
                if self.headers.get("Authorization") != f"Bearer {fake.reviewer_token}":
                    self._answer(401, _status_failure(401, "Unauthorized", "Unauthorized"))
                    return
                self._answer(201, fake.review(body))

        self._server = serve(Handler, self.tls_ca)
        return self

    def stop(self) -> None:
        stop_serving(self._server)

    def review(self, body: dict[str, Any]) -> dict[str, Any]:
        """A TokenReview answer, as kube-apiserver gives it."""
        spec = body.get("spec", {})
        token, wanted = (
            spec.get("token", ""),
            spec.get("audiences") or ["https://kubernetes.default.svc"],
        )
        answer: dict[str, Any] = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
        }
        try:
            claims = jwt.decode(
                token,
                self.signing_key.public_key(),
                algorithms=["RS256"],
                audience=wanted,
                issuer=ISSUER,
            )
        except jwt.PyJWTError:
            answer["status"] = {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
            return answer
        k8s = claims["kubernetes.io"]
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        answer["status"] = {
            "authenticated": True,
            "user": {
                "username": claims["sub"],
                "uid": k8s["serviceaccount"]["uid"],
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{k8s['namespace']}",
                    "system:authenticated",
                ],
                "extra": {
                    "authentication.kubernetes.io/credential-id": [f"JTI={claims['jti']}"],
                    "authentication.kubernetes.io/node-name": [k8s["node"]["name"]],
                    "authentication.kubernetes.io/node-uid": [k8s["node"]["uid"]],
                    "authentication.kubernetes.io/pod-name": [k8s["pod"]["name"]],
                    "authentication.kubernetes.io/pod-uid": [k8s["pod"]["uid"]],
                },
            },
            "audiences": [a for a in audiences if a in wanted],
        }
        return answer


def node_object(
    name: str, uid: str, internal_ip: str, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A worker Node as the API server answers it (trimmed of fields nothing reads)."""
    return {
        "metadata": {
            "name": name,
            "uid": uid,
            "creationTimestamp": "2026-11-02T08:14:51Z",
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m5.large",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": "eu-west-1b",
                **(labels or {}),
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": "2026-11-30T08:00:00Z",
                    "lastTransitionTime": "2026-11-02T08:15:30Z",
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, uid)),
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": "6.1.0-27-cloud-amd64",
                "kubeProxyVersion": "v1.31.2",
                "kubeletVersion": "v1.31.2",
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
            },
        },
    }


def _status_failure(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
