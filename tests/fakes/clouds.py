"""Fake GCP and Azure metadata services, and their identity providers' JWKS over HTTPS.

GCE metadata: `GET /computeMetadata/v1/instance/service-accounts/<sa>/identity?audience=&
format=full` answers a Google-shaped identity token (RS256, `kid`, issuer
`https://accounts.google.com`, `google.compute_engine` claims) only with the
`Metadata-Flavor: Google` header. Azure IMDS: `GET /metadata/identity/oauth2/token?
api-version=&resource=` answers the token JSON only with `Metadata: true`. Each provider
publishes its keys as a JWKS on an HTTPS server with a test CA.
"""

from __future__ import annotations

import json
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.pki import TestCA, key_pem, pem

Route = Callable[[str, dict[str, list[str]], Any], tuple[int, str, str]]


class _Server:
    """A small HTTP(S) server answering GETs through `route(path, query, headers)`."""

    def __init__(self, route: Route, *, tls: TestCA | None = None) -> None:
        self.route, self.tls = route, tls
        self._server: ThreadingHTTPServer | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="hallmark-fake-cloud-")

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> _Server:
        route = self.route

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                status, kind, body = route(parts.path, parse_qs(parts.query), self.headers)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            cert, key = self.tls.server()
            cert_file, key_file = Path(self._dir.name) / "c.pem", Path(self._dir.name) / "k.pem"
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


class IdentityProvider:
    """A signing key and its JWKS served over HTTPS (Google's certs, Azure AD's keys)."""

    def __init__(self, jwks_path: str) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(20)
        self.ca = TestCA("fake identity provider CA")
        self.jwks_path = jwks_path
        self.https = _Server(self._route, tls=self.ca)

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [public]}

    def _route(self, path: str, query: dict[str, list[str]], headers: Any) -> tuple[int, str, str]:
        if path == self.jwks_path:
            return 200, "application/json", json.dumps(self.jwks())
        return 404, "text/plain", "not found"

    @property
    def jwks_url(self) -> str:
        return self.https.url + self.jwks_path

    @property
    def ca_pem(self) -> str:
        return pem(self.ca.cert)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


class FakeGce:
    """A GCE VM's metadata server and Google's certs endpoint."""

    def __init__(self, project: str = "acme-prod", zone: str = "europe-west1-b") -> None:
        self.google = IdentityProvider("/oauth2/v3/certs")
        self.project, self.zone = project, zone
        self.instance_id = str(secrets.randbelow(10**19))
        self.instance_name = f"web-{secrets.token_hex(2)}"
        self.metadata = _Server(self._route)
        self._last_issued = 0

    def token(self, audience: str, *, issued_at: int | None = None, ttl: int = 3600) -> str:
        # Each token the metadata server mints is a new one: two asked for within one second
        # (RS256 is deterministic) would otherwise be the same bytes, a replay.
        now = issued_at or max(int(time.time()), self._last_issued + 1)
        self._last_issued = max(self._last_issued, now)
        return self.google.sign(
            {
                "aud": audience,
                "azp": "117820386487316281384",
                "email": "123456789-compute@developer.gserviceaccount.com",
                "email_verified": True,
                "exp": now + ttl,
                "iat": now,
                "iss": "https://accounts.google.com",
                "sub": "117820386487316281384",
                "google": {
                    "compute_engine": {
                        "instance_creation_timestamp": now - 86400,
                        "instance_id": self.instance_id,
                        "instance_name": self.instance_name,
                        "project_id": self.project,
                        "project_number": 123456789012,
                        "zone": self.zone,
                    }
                },
            }
        )

    def _route(self, path: str, query: dict[str, list[str]], headers: Any) -> tuple[int, str, str]:
        if headers.get("Metadata-Flavor") != "Google":
            return 403, "text/html", "Missing Metadata-Flavor:Google header."
        if path.startswith("/computeMetadata/v1/instance/service-accounts/") and path.endswith(
            "/identity"
        ):
            audience = (query.get("audience") or [""])[0]
            if not audience or (query.get("format") or [""])[0] != "full":
                return 400, "text/plain", "non-empty audience and format=full expected"
            return 200, "application/text", self.token(audience)
        return 404, "text/plain", "not found"

    def start(self) -> FakeGce:
        self.google.https.start()
        self.metadata.start()
        return self

    def stop(self) -> None:
        self.metadata.stop()
        self.google.https.stop()


class FakeAzureVm:
    """An Azure VM's IMDS managed-identity endpoint and its Azure AD tenant's keys."""

    def __init__(self, tenant_id: str | None = None) -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.principal_id = str(uuid.uuid4())
        self.azure_ad = IdentityProvider(f"/{self.tenant_id}/discovery/v2.0/keys")
        self.imds = _Server(self._route)

    def token(self, resource: str, *, issued_at: int | None = None, ttl: int = 3600) -> str:
        now = issued_at or int(time.time())
        return self.azure_ad.sign(
            {
                "aud": resource,
                "iss": f"https://sts.windows.net/{self.tenant_id}/",
                "iat": now,
                "nbf": now,
                "exp": now + ttl,
                "aio": "E2ZgYPjG+eH6vPm/",
                "appid": str(uuid.uuid4()),
                "appidacr": "2",
                "idp": f"https://sts.windows.net/{self.tenant_id}/",
                "oid": self.principal_id,
                "rh": "0.AAAA",
                "sub": self.principal_id,
                "tid": self.tenant_id,
                "uti": secrets.token_urlsafe(16),
                "ver": "1.0",
                "xms_mirid": "/subscriptions/d5b40d61-272e-48da-beb9-05f295c42bd6/"
                "resourcegroups/frontend/providers/Microsoft.Compute/virtualMachines/blog",
            }
        )

    def _route(self, path: str, query: dict[str, list[str]], headers: Any) -> tuple[int, str, str]:
        if headers.get("Metadata") != "true":
            return 400, "application/json", json.dumps({"error": "invalid_request"})
        if path != "/metadata/identity/oauth2/token" or not query.get("api-version"):
            return 404, "application/json", json.dumps({"error": "not_found"})
        resource = (query.get("resource") or [""])[0]
        now = int(time.time())
        answer = {
            "access_token": self.token(resource, issued_at=now),
            "client_id": str(uuid.uuid4()),
            "expires_in": "3599",
            "expires_on": str(now + 3599),
            "ext_expires_in": "3599",
            "not_before": str(now),
            "resource": resource,
            "token_type": "Bearer",
        }
        return 200, "application/json", json.dumps(answer)

    def start(self) -> FakeAzureVm:
        self.azure_ad.https.start()
        self.imds.start()
        return self

    def stop(self) -> None:
        self.imds.stop()
        self.azure_ad.https.stop()
