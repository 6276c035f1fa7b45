"""Public keys of bundle authorities as JWKs (RFC 7517/7518), and which key types are served.

SPIRE can be configured with EC P-256/P-384 and RSA 2048/4096 keys (`ca_key_type`,
`jwt_key_type`); other SPIFFE implementations also issue RSA 3072. Those are the keys a
bundle may carry. Anything else (P-521, small or odd RSA sizes, DSA, Ed25519, ...) is a key no
SPIFFE implementation issues: it raises `UnsupportedKeyType`, which input validation refuses
and bundle consumers skip (the standard has them ignore unknown key types).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hallmark.errors import InvalidBundle, UnsupportedKeyType

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

# curve name -> (JWK crv, curve, coordinate size in bytes)
_CURVES: dict[str, tuple[str, ec.EllipticCurve, int]] = {
    "secp256r1": ("P-256", ec.SECP256R1(), 32),
    "secp384r1": ("P-384", ec.SECP384R1(), 48),
}
_CURVES_BY_CRV = {crv: (curve, size) for crv, curve, size in _CURVES.values()}
RSA_KEY_SIZES = frozenset({2048, 3072, 4096})
_MAX_EXPONENT_BYTES = 8
_B64URL = re.compile(r"[A-Za-z0-9_-]{1,1024}")


def _b64url_uint(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


def _b64url_bytes(jwk: dict[str, Any], name: str) -> bytes:
    text = jwk.get(name)
    if not isinstance(text, str) or len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        raise InvalidBundle(f"JWK parameter {name!r} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidBundle(f"JWK parameter {name!r} is not base64url") from None


def check_supported_key(key: object) -> PublicKey:
    """The key if bundles may carry it; `UnsupportedKeyType` otherwise."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise UnsupportedKeyType(
                f"EC curve {key.curve.name} is not one SPIFFE implementations issue "
                "(P-256 or P-384)"
            )
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in RSA_KEY_SIZES:
            raise UnsupportedKeyType(
                f"RSA keys of {key.key_size} bits are not issued by SPIFFE implementations "
                f"({', '.join(str(s) for s in sorted(RSA_KEY_SIZES))} bits are)"
            )
        return key
    raise UnsupportedKeyType(
        f"{type(key).__name__.lstrip('_')} keys are not issued by SPIFFE implementations "
        "(EC P-256/P-384 and RSA are)"
    )


def ec_public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    check_supported_key(key)
    crv, _, size = _CURVES[key.curve.name]
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": crv,
        "x": _b64url_uint(numbers.x, size),
        "y": _b64url_uint(numbers.y, size),
    }


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The JWK key parameters (kty, crv/x/y or n/e) of a supported public key."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ec_public_jwk(key)
    numbers = check_supported_key(key).public_numbers()
    assert isinstance(numbers, rsa.RSAPublicNumbers)  # noqa: S101 - checked just above
    return {
        "kty": "RSA",
        "n": _b64url_uint(numbers.n, (numbers.n.bit_length() + 7) // 8),
        "e": _b64url_uint(numbers.e, (numbers.e.bit_length() + 7) // 8),
    }


def public_key_from_jwk(jwk: dict[str, Any]) -> PublicKey:
    """Read a JWK's public key; malformed → `InvalidBundle`, unknown type → `UnsupportedKeyType`."""
    kty = jwk.get("kty")
    if kty == "EC":
        crv = jwk.get("crv")
        if not isinstance(crv, str) or crv not in _CURVES_BY_CRV:
            raise UnsupportedKeyType(f"EC curve {str(crv)[:20]!r} is not P-256 or P-384")
        curve, size = _CURVES_BY_CRV[crv]
        x, y = _b64url_bytes(jwk, "x"), _b64url_bytes(jwk, "y")
        if len(x) != size or len(y) != size:
            raise InvalidBundle(f"{crv} coordinates must be {size} bytes each")
        try:
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            ).public_key()
        except ValueError:
            raise InvalidBundle(f"the JWK's point is not on curve {crv}") from None
    if kty == "RSA":
        n, e = _b64url_bytes(jwk, "n"), _b64url_bytes(jwk, "e")
        if len(e) > _MAX_EXPONENT_BYTES:
            raise InvalidBundle("the RSA exponent is too long")
        try:
            key = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big"))
            return check_supported_key(key.public_key())
        except ValueError:
            raise InvalidBundle("the JWK is not a valid RSA public key") from None
    raise UnsupportedKeyType(f"JWK key type {str(kty)[:20]!r} is not EC or RSA")
