"""SPIFFE bundles (SPIFFE_Trust_Domain_and_Bundle.md): a JWKS with `spiffe_sequence`."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.errors import InvalidBundle
from hallmark.spiffeid import TrustDomain

USE_X509 = "x509-svid"
USE_JWT = "jwt-svid"
DEFAULT_REFRESH_HINT = 300  # seconds, as SPIRE's bundle endpoint


def _b64url_uint(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


def _b64url_decode_uint(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


_CURVES: dict[str, tuple[str, ec.EllipticCurve, int]] = {
    "secp256r1": ("P-256", ec.SECP256R1(), 32),
    "secp384r1": ("P-384", ec.SECP384R1(), 48),
}
_CURVES_BY_CRV = {crv: (curve, size) for crv, curve, size in _CURVES.values()}


def ec_public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    crv, _, size = _CURVES[key.curve.name]
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": crv,
        "x": _b64url_uint(numbers.x, size),
        "y": _b64url_uint(numbers.y, size),
    }


def ec_public_key_from_jwk(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC" or jwk.get("crv") not in _CURVES_BY_CRV:
        raise InvalidBundle(f"unsupported JWK key type {jwk.get('kty')}/{jwk.get('crv')}")
    curve, _ = _CURVES_BY_CRV[jwk["crv"]]
    return ec.EllipticCurvePublicNumbers(
        _b64url_decode_uint(jwk["x"]), _b64url_decode_uint(jwk["y"]), curve
    ).public_key()


@dataclass(frozen=True)
class JwtAuthority:
    """A JWT-SVID signing key as published: its key ID and public key."""

    key_id: str
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class Bundle:
    """A trust domain's bundle: X.509 authorities, JWT authorities and a sequence number."""

    trust_domain: TrustDomain
    x509_authorities: tuple[x509.Certificate, ...] = ()
    jwt_authorities: tuple[JwtAuthority, ...] = ()
    sequence: int = 0
    refresh_hint: int | None = DEFAULT_REFRESH_HINT
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_jwks(self) -> dict[str, Any]:
        keys: list[dict[str, Any]] = []
        for cert in self.x509_authorities:
            key = cert.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise InvalidBundle("only EC X.509 authorities are supported")
            der = cert.public_bytes(serialization.Encoding.DER)
            keys.append(
                {**ec_public_jwk(key), "use": USE_X509, "x5c": [base64.b64encode(der).decode()]}
            )
        for authority in self.jwt_authorities:
            keys.append(
                {**ec_public_jwk(authority.public_key), "use": USE_JWT, "kid": authority.key_id}
            )
        document: dict[str, Any] = {"keys": keys, "spiffe_sequence": self.sequence}
        if self.refresh_hint is not None:
            document["spiffe_refresh_hint"] = self.refresh_hint
        return document

    def to_json(self) -> bytes:
        return json.dumps(self.to_jwks(), separators=(",", ":"), sort_keys=True).encode()

    def x509_der(self) -> bytes:
        """Concatenated DER certificates: the Workload API's X.509 bundle encoding."""
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.x509_authorities)

    def x509_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.x509_authorities)

    def jwt_jwks_json(self) -> bytes:
        """The JWKS of JWT authorities only: the Workload API's JWT bundle encoding."""
        keys = [
            {**ec_public_jwk(a.public_key), "use": USE_JWT, "kid": a.key_id}
            for a in self.jwt_authorities
        ]
        return json.dumps({"keys": keys}, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, trust_domain: TrustDomain, data: bytes | str | dict[str, Any]) -> Bundle:
        """Parse a SPIFFE bundle; keys with an unknown `use` are ignored, as the standard says."""
        try:
            document = json.loads(data) if isinstance(data, bytes | str) else data
        except ValueError as exc:
            raise InvalidBundle(f"bundle is not JSON: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise InvalidBundle("bundle must be a JSON object with a 'keys' array")
        x509_authorities: list[x509.Certificate] = []
        jwt_authorities: list[JwtAuthority] = []
        for jwk in document["keys"]:
            if not isinstance(jwk, dict):
                raise InvalidBundle("every JWK must be an object")
            use = jwk.get("use")
            if use == USE_X509:
                x5c = jwk.get("x5c")
                if not x5c:
                    continue  # X509-SVID.md 6.1: such an entry MUST be ignored
                try:
                    x509_authorities.append(
                        x509.load_der_x509_certificate(base64.b64decode(x5c[0]))
                    )
                except ValueError as exc:
                    raise InvalidBundle(f"x5c is not a DER certificate: {exc}") from None
            elif use == USE_JWT:
                if not jwk.get("kid"):
                    continue  # JWT-SVID.md 6.2: an entry without kid MUST be ignored
                if jwk.get("kty") != "EC" or jwk.get("crv") not in _CURVES_BY_CRV:
                    continue  # Trust Domain and Bundle 4.1: unknown key types are ignored
                jwt_authorities.append(JwtAuthority(jwk["kid"], ec_public_key_from_jwk(jwk)))
        return cls(
            trust_domain=trust_domain,
            x509_authorities=tuple(x509_authorities),
            jwt_authorities=tuple(jwt_authorities),
            sequence=int(document.get("spiffe_sequence", 0)),
            refresh_hint=document.get("spiffe_refresh_hint"),
        )


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidBundle(f"not PEM certificates: {exc}") from None


def load_der_certificates(data: bytes) -> list[x509.Certificate]:
    """Split concatenated DER certificates (the Workload API's bundle encoding)."""
    certs: list[x509.Certificate] = []
    offset = 0
    while offset < len(data):
        if data[offset] != 0x30:
            raise InvalidBundle("not a DER SEQUENCE")
        length_byte = data[offset + 1]
        if length_byte < 0x80:
            header, length = 2, length_byte
        else:
            count = length_byte & 0x7F
            header = 2 + count
            length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
        end = offset + header + length
        certs.append(x509.load_der_x509_certificate(data[offset:end]))
        offset = end
    return certs


def der_chain(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
