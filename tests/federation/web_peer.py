"""A real https_web bundle endpoint for tests: TLS with a test CA, answers set per path."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hallmark.jwk import public_jwk


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca(trust_domain: str | None = None, days: float = 1) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if trust_domain:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
    return key, builder.sign(key, hashes.SHA256())


def server_certificate(
    ca_key: Any, ca: x509.Certificate, *, expired: bool = False, ip_san: bool = True
) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = (
        (now - dt.timedelta(days=2), now - dt.timedelta(days=1))
        if expired
        else (now - dt.timedelta(minutes=1), now + dt.timedelta(hours=1))
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost")]
                + ([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if ip_san else [])
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def bundle_document(trust_domain: str, sequence: int = 1, *, x509_authority: bool = True) -> dict:
    """A SPIFFE bundle of a foreign trust domain: one X.509 CA (+ a JWT key)."""
    keys: list[dict[str, Any]] = []
    if x509_authority:
        _, ca = make_ca(trust_domain)
        der = ca.public_bytes(serialization.Encoding.DER)
        keys.append(
            {
                **public_jwk(ca.public_key()),
                "use": "x509-svid",
                "x5c": [base64.b64encode(der).decode()],
            }
        )
    jwt_key = ec.generate_private_key(ec.SECP256R1())
    keys.append({**public_jwk(jwt_key.public_key()), "use": "jwt-svid", "kid": f"k{sequence}"})
    return {"keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": 60}


@dataclass
class WebPeer:
    """Answers: path → (status, headers, body)."""

    port: int = 0
    ca_file: str = ""
    answers: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def answer_json(self, path: str, document: Any, status: int = 200) -> None:
        self.answers[path] = (
            status,
            {"Content-Type": "application/json"},
            json.dumps(document).encode(),
        )


@contextlib.contextmanager
def running_web_peer(*, expired: bool = False, ip_san: bool = True) -> Iterator[WebPeer]:
    ca_key, ca = make_ca()
    key, certificate = server_certificate(ca_key, ca, expired=expired, ip_san=ip_san)
    peer = WebPeer()
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        (base / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (base / "server.pem").write_bytes(
            certificate.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        peer.ca_file = str(base / "ca.pem")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                peer.requests.append({k.lower(): v for k, v in self.headers.items()})
                status, headers, body = peer.answers.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(base / "server.pem"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        peer.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield peer
        finally:
            server.shutdown()
            server.server_close()
