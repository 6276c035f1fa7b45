"""Foreign CA certificates and JWKs of every key type a peer might publish (test helpers)."""

from __future__ import annotations

import base64
import datetime as dt
import functools
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from hallmark.jwk import public_jwk


@functools.cache
def private_key(kind: str) -> Any:
    """A cached private key: `ec-p256`, `ec-p384`, `ec-p521`, `rsa-<bits>`, `dsa`, `ed25519`."""
    if kind.startswith("ec-"):
        curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}
        return ec.generate_private_key(curve[kind[3:]])
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    if kind == "dsa":
        return dsa.generate_private_key(key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


@functools.cache
def ca_certificate(kind: str, trust_domain: str = "partner.test") -> x509.Certificate:
    """A self-signed CA certificate of a foreign trust domain with a key of `kind`."""
    key = private_key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
    )
    algorithm = None if kind == "ed25519" else hashes.SHA256()
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


def x509_jwk(kind: str) -> dict[str, Any]:
    der = ca_certificate(kind).public_bytes(serialization.Encoding.DER)
    return {"use": "x509-svid", "kty": "EC", "x5c": [base64.b64encode(der).decode()]}


def raw_jwk(key: Any) -> dict[str, str]:
    """JWK parameters of any EC or RSA public key, supported or not (hallmark's refuses some)."""
    numbers = key.public_numbers()
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        crv = {"secp521r1": "P-521"}.get(key.curve.name)
        if crv is None:
            return public_jwk(key)
        x, y = numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big")
        return {"kty": "EC", "crv": crv, "x": b64url(x), "y": b64url(y)}
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "n": b64url(n), "e": b64url(numbers.e.to_bytes(3, "big"))}


def jwt_jwk(kind: str, kid: str = "k1") -> dict[str, Any]:
    return {**raw_jwk(private_key(kind).public_key()), "use": "jwt-svid", "kid": kid}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
