"""A fake EC2 instance metadata service (IMDSv2 only) with a test AWS signing certificate.

`PUT /latest/api/token` (with `X-aws-ec2-metadata-token-ttl-seconds`) hands out a session
token; `GET /latest/dynamic/instance-identity/document` and `.../signature` answer only with
it (401 otherwise), as IMDSv2 does. The document is shaped as EC2's; the signature is
base64 RSA-SHA256 by the region's (here: a test) certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


class AwsSigner:
    """Stands in for AWS's per-region instance identity signing key and public certificate."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington State"),
                x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon Web Services LLC"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, document: str) -> str:
        signature = self.key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()


def instance_document(
    account: str = "123456789012", region: str = "us-west-2", **overrides: Any
) -> str:
    """An instance identity document as EC2 writes it (pretty-printed JSON)."""
    document = {
        "accountId": account,
        "architecture": "x86_64",
        "availabilityZone": f"{region}b",
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": "ami-0abcdef1234567890",
        "instanceId": f"i-{secrets.token_hex(8) + secrets.token_hex(1)[:1]}",
        "instanceType": "m5.large",
        "kernelId": None,
        "pendingTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "privateIp": "10.0.12.34",
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }
    document.update(overrides)
    return json.dumps(document, indent=2)


class FakeImds:
    """IMDSv2 on 127.0.0.1 for one instance."""

    def __init__(self, signer: AwsSigner, document: str) -> None:
        self.signer, self.document = signer, document
        self.tokens: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeImds:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _answer(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:  # noqa: N802
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if self.path != "/latest/api/token" or not ttl.isdigit():
                    self._answer(400, "")
                    return
                token = base64.b64encode(secrets.token_bytes(40)).decode()
                fake.tokens.add(token)
                self._answer(200, token)

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("X-aws-ec2-metadata-token") not in fake.tokens:
                    self._answer(401, "")
                    return
                if self.path == "/latest/dynamic/instance-identity/document":
                    self._answer(200, fake.document)
                elif self.path == "/latest/dynamic/instance-identity/signature":
                    signature = fake.signer.sign(fake.document)
                    # EC2 wraps the base64 at 64 characters
                    self._answer(
                        200, "\n".join(signature[i : i + 64] for i in range(0, len(signature), 64))
                    )
                else:
                    self._answer(404, "")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
