"""SPIFFE bundles (SPIFFE_Trust_Domain_and_Bundle.md): a JWKS with `spiffe_sequence`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from hallmark.errors import InvalidBundle, UnsupportedKeyType
from hallmark.jwk import (
    PublicKey,
    check_supported_key,
    ec_public_jwk,
    public_jwk,
    public_key_from_jwk,
)
from hallmark.spiffeid import TrustDomain

__all__ = [
    "USE_JWT",
    "USE_X509",
    "Bundle",
    "JwtAuthority",
    "der_chain",
    "ec_public_jwk",
    "load_der_certificates",
    "load_pem_certificates",
    "public_jwk",
]

USE_X509 = "x509-svid"
USE_JWT = "jwt-svid"
DEFAULT_REFRESH_HINT = 300  # seconds, as SPIRE's bundle endpoint
# Bounds on foreign documents: SPIRE's bundles hold a handful of keys (current, next, old).
MAX_BUNDLE_BYTES = 512 * 1024
MAX_BUNDLE_KEYS = 128
MAX_CERTIFICATE_BASE64 = 64 * 1024
MAX_KEY_ID_LENGTH = 256
MAX_INT64 = 2**63 - 1  # spiffe_sequence is stored in a signed 64-bit column


@dataclass(frozen=True)
class JwtAuthority:
    """A JWT-SVID signing key as published: its key ID and public key."""

    key_id: str
    public_key: PublicKey


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
            der = cert.public_bytes(serialization.Encoding.DER)
            key = check_supported_key(cert.public_key())
            keys.append(
                {**public_jwk(key), "use": USE_X509, "x5c": [base64.b64encode(der).decode()]}
            )
        keys.extend(
            {**public_jwk(a.public_key), "use": USE_JWT, "kid": a.key_id}
            for a in self.jwt_authorities
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
            {**public_jwk(a.public_key), "use": USE_JWT, "kid": a.key_id}
            for a in self.jwt_authorities
        ]
        return json.dumps({"keys": keys}, separators=(",", ":")).encode()

    @classmethod
    def parse(
        cls, trust_domain: TrustDomain, data: bytes | str | dict[str, Any], *, strict: bool = False
    ) -> Bundle:
        """Parse a SPIFFE bundle; every malformed document raises `InvalidBundle`.

        Keys with an unknown `use` are ignored, as the standard says. Keys of a type no SPIFFE
        implementation issues are ignored too, unless `strict` (foreign input at the API),
        where they raise `UnsupportedKeyType` so the caller learns at once, not when an agent
        cannot serve them.
        """
        document = _load_document(data)
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise InvalidBundle("bundle must be a JSON object with a 'keys' array")
        if len(keys) > MAX_BUNDLE_KEYS:
            raise InvalidBundle(
                f"bundle holds {len(keys)} keys; at most {MAX_BUNDLE_KEYS} are accepted",
                code="bundle_too_large",
            )
        x509_authorities: list[x509.Certificate] = []
        jwt_authorities: list[JwtAuthority] = []
        for jwk in keys:
            if not isinstance(jwk, dict):
                raise InvalidBundle("every JWK must be an object")
            try:
                if jwk.get("use") == USE_X509:
                    cert = _x509_authority(jwk)
                    if cert is not None:
                        x509_authorities.append(cert)
                elif jwk.get("use") == USE_JWT:
                    authority = _jwt_authority(jwk)
                    if authority is not None:
                        jwt_authorities.append(authority)
            except UnsupportedKeyType:
                if strict:
                    raise
        return cls(
            trust_domain=trust_domain,
            x509_authorities=tuple(x509_authorities),
            jwt_authorities=tuple(jwt_authorities),
            sequence=_bounded_int(document, "spiffe_sequence", 0),
            refresh_hint=_bounded_int(document, "spiffe_refresh_hint", None),
        )


def _load_document(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(data, bytes | str):
        if len(data) > MAX_BUNDLE_BYTES:
            raise InvalidBundle(
                f"bundle is larger than {MAX_BUNDLE_BYTES} bytes", code="bundle_too_large"
            )
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise InvalidBundle(f"bundle is not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidBundle("bundle must be a JSON object with a 'keys' array")
    return data


def _bounded_int(document: dict[str, Any], name: str, default: int | None) -> Any:
    value = document.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT64:
        raise InvalidBundle(f"{name} must be an integer from 0 to {MAX_INT64}")
    return value


def _x509_authority(jwk: dict[str, Any]) -> x509.Certificate | None:
    x5c = jwk.get("x5c")
    if x5c is None or x5c in ([], ""):
        return None  # X509-SVID.md 6.1: such an entry MUST be ignored
    if not isinstance(x5c, list) or not isinstance(x5c[0], str):
        raise InvalidBundle("x5c must be an array of base64 DER certificates")
    if len(x5c[0]) > MAX_CERTIFICATE_BASE64:
        raise InvalidBundle("x5c certificate is too large", code="bundle_too_large")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (binascii.Error, ValueError, x509.InvalidVersion) as exc:
        raise InvalidBundle(f"x5c is not a DER certificate: {str(exc)[:200]}") from None
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UnsupportedKeyType(f"x5c certificate key cannot be used: {str(exc)[:200]}") from None
    check_supported_key(key)
    return cert


def _jwt_authority(jwk: dict[str, Any]) -> JwtAuthority | None:
    kid = jwk.get("kid")
    if kid is None or kid == "":
        return None  # JWT-SVID.md 6.2: an entry without kid MUST be ignored
    if not isinstance(kid, str) or len(kid) > MAX_KEY_ID_LENGTH:
        raise InvalidBundle(f"kid must be a string of at most {MAX_KEY_ID_LENGTH} characters")
    return JwtAuthority(kid, public_key_from_jwk(jwk))


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise InvalidBundle(f"not PEM certificates: {exc}") from None


def load_der_certificates(data: bytes) -> list[x509.Certificate]:
    """Split concatenated DER certificates (the Workload API's bundle encoding)."""
    certs: list[x509.Certificate] = []
    offset = 0
    while offset < len(data):
        if data[offset] != 0x30 or offset + 2 > len(data):
            raise InvalidBundle("not a DER SEQUENCE")
        length_byte = data[offset + 1]
        if length_byte < 0x80:
            header, length = 2, length_byte
        else:
            count = length_byte & 0x7F
            if not 1 <= count <= 4 or offset + 2 + count > len(data):
                raise InvalidBundle("bad DER length")
            header = 2 + count
            length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
        end = offset + header + length
        if end > len(data):
            raise InvalidBundle("truncated DER certificate")
        try:
            certs.append(x509.load_der_x509_certificate(data[offset:end]))
        except (ValueError, x509.InvalidVersion) as exc:
            raise InvalidBundle(f"not a DER certificate: {str(exc)[:200]}") from None
        offset = end
    return certs


def der_chain(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
