"""A small test PKI: CAs, node certificates (x509pop) and TLS server certificates for fakes."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hallmark test fleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def bad_version_pem(certificate: x509.Certificate) -> str:
    """The certificate with its X.509 version field set to 6: cryptography refuses to load it
    with InvalidVersion, which is not a ValueError."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
    at = der.index(v3)
    bad = der[:at] + bytes.fromhex("a003020105") + der[at + len(v3) :]
    body = base64.encodebytes(bad).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class TestCA:
    """A CA that signs intermediates, node certificates and server certificates."""

    __test__ = False  # a helper, not a test class

    name: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    certificate: x509.Certificate | None = None
    parent: TestCA | None = None

    def __post_init__(self) -> None:
        if self.certificate is None:
            self.certificate = self._issue(
                self.name, self.key.public_key(), ca=True, signer=self.parent
            )

    @property
    def cert(self) -> x509.Certificate:
        assert self.certificate is not None
        return self.certificate

    def _issue(  # noqa: PLR0913
        self,
        cn: str,
        public_key: ec.EllipticCurvePublicKey,
        *,
        ca: bool,
        signer: TestCA | None,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key_usage_signature: bool = True,
        server: bool = False,
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        issuer_name = signer.cert.subject if signer else _name(cn)
        issuer_key = signer.key if signer else self.key
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(minutes=5))
            .not_valid_after(not_after or now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=key_usage_signature or server,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if server:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def intermediate(self, name: str) -> TestCA:
        return TestCA(name=name, parent=self)

    def node(
        self, cn: str, **options: object
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        return self._issue(cn, key.public_key(), ca=False, signer=self, **options), key  # type: ignore[arg-type]

    def issue(self, cn: str, public_key: Any, **options: Any) -> x509.Certificate:
        """A leaf for a key held elsewhere (a TPM's EK or DevID key)."""
        return self._issue(cn, public_key, ca=False, signer=self, **options)

    def server(
        self, host: str = "127.0.0.1"
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue(
            host,
            key.public_key(),
            ca=False,
            signer=self,
            dns=("localhost",),
            ips=(host,),
            server=True,
        )
        return cert, key


def server_tls_context(ca: TestCA, host: str = "127.0.0.1") -> ssl.SSLContext:
    """A TLS server context with a fresh certificate for `host` issued by `ca`."""
    cert, key = ca.server(host)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="hallmark-fake-tls-") as directory:
        cert_file, key_file = Path(directory) / "server.pem", Path(directory) / "server.key"
        cert_file.write_text(pem(cert))
        key_file.write_bytes(key_pem(key))
        context.load_cert_chain(cert_file, key_file)
    return context


def serve(
    handler: type[BaseHTTPRequestHandler], tls_ca: TestCA | None = None
) -> ThreadingHTTPServer:
    """`handler` served on 127.0.0.1 (an ephemeral port) in a daemon thread, over TLS with a
    certificate of `tls_ca` when given; end it with `stop_serving`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls_ca is not None:
        server.socket = server_tls_context(tls_ca).wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_serving(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


def write_node_files(
    directory: Path, chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    """SPIRE's agent files for x509pop: certificate_path (leaf first) and private_key_path."""
    cert_path, key_path = directory / "node.crt.pem", directory / "node.key.pem"
    cert_path.write_text(pem(*chain))
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path
