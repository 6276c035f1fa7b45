"""A fake Kubernetes API server over HTTPS: OIDC discovery, JWKS and TokenReview.

It speaks what a cluster's API server speaks: `GET /.well-known/openid-configuration`,
`GET /openid/v1/jwks`, and `POST /apis/authentication.k8s.io/v1/tokenreviews` (bearer
authenticated) answering TokenReview JSON with `status.user.extra` as the API server fills it
for a bound (projected) service-account token. Tokens are minted as the API server mints
projected tokens: RS256, a `kid`, the `kubernetes.io` claim with namespace, pod, node and
service account.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.pki import TestCA, key_pem, pem

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
        self._server: ThreadingHTTPServer | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="hallmark-fake-k8s-")

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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cert, key = self.tls_ca.server()
        cert_file = Path(self._dir.name) / "server.pem"
        key_file = Path(self._dir.name) / "server.key"
        cert_file.write_text(pem(cert))
        key_file.write_bytes(key_pem(key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._dir.cleanup()

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
