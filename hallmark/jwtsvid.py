"""JWT-SVIDs (JWT-SVID.md): minted through a Signer, verified against SPIFFE bundles."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from hallmark.bundle import Bundle
from hallmark.errors import HallmarkError, InvalidSpiffeId
from hallmark.signing import Signer
from hallmark.spiffeid import SpiffeId, TrustDomain

# JWT-SVID.md 2.1: RFC 7518 sections 3.3 (RS*), 3.4 (ES*) and 3.5 (PS*); nothing else.
ALLOWED_ALGORITHMS = frozenset(
    f"{family}{bits}" for family in ("RS", "ES", "PS") for bits in (256, 384, 512)
)
# JWT-SVID.md 2: any header not described there MUST NOT be included.
ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
ALLOWED_TYPES = frozenset({"JWT", "JOSE"})  # JWT-SVID.md 2.3
RESERVED_CLAIMS = frozenset({"sub", "aud", "exp", "iat"})
DEFAULT_LEEWAY = timedelta(seconds=30)  # Appendix A: "a small amount of leeway is acceptable"
MAX_TOKEN_LENGTH = 64 * 1024
MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z, the last datetime can hold
MINT_ALGORITHM = "ES256"  # Signer signs SHA-256 digests with a P-256 key: ES256 only.

# ES* algorithm -> (curve name, hash, coordinate size in bytes): RFC 7518 section 3.4.
_EC_ALGORITHMS: dict[str, tuple[str, type[hashes.HashAlgorithm], int]] = {
    "ES256": ("secp256r1", hashes.SHA256, 32),
    "ES384": ("secp384r1", hashes.SHA384, 48),
    "ES512": ("secp521r1", hashes.SHA512, 66),
}
_RSA_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

BundleSource = Mapping[TrustDomain, Bundle] | Callable[[TrustDomain], Bundle | None]


class JwtSvidError(HallmarkError):
    """A JWT-SVID that cannot be minted or does not validate; `code` says why."""

    code = "jwt_invalid"


def _fail(code: str, detail: str) -> JwtSvidError:
    return JwtSvidError(detail, code=code)


@dataclass(frozen=True)
class JwtSvidRequest:
    """One JWT-SVID to mint: subject, audience (one or more) and lifetime."""

    spiffe_id: SpiffeId
    audience: Sequence[str]
    ttl: timedelta
    extra_claims: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class JwtSvid:
    """A validated JWT-SVID: its SPIFFE ID, audience, expiry, all claims and the token."""

    spiffe_id: SpiffeId
    audience: tuple[str, ...]
    expiry: datetime
    claims: dict[str, Any] = field(compare=False, hash=False)
    token: str


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, what: str) -> bytes:
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        raise _fail("jwt_malformed", f"{what} is not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _fail("jwt_malformed", f"{what} is not base64url") from None


def _json_encode(value: Mapping[str, Any]) -> str:
    return _b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _fail("jwt_malformed", "duplicate member names in a JSON object")
    return result


def _json_object(segment: str, what: str) -> dict[str, Any]:
    raw = _b64url_decode(segment, what)
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError):
        raise _fail("jwt_malformed", f"{what} is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise _fail("jwt_malformed", f"{what} is not a JSON object")
    return value


def _check_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _claims_for(request: JwtSvidRequest, now: datetime) -> dict[str, Any]:
    if not request.spiffe_id.path:
        raise _fail("jwt_invalid_request", f"{request.spiffe_id} is a trust domain, not a workload")
    audience = [request.audience] if isinstance(request.audience, str) else list(request.audience)
    if not audience or not all(isinstance(a, str) and a for a in audience):
        raise _fail("jwt_invalid_request", "aud needs one or more non-empty values")
    if request.ttl <= timedelta(0):
        raise _fail("jwt_invalid_request", "ttl must be positive")
    extra = dict(request.extra_claims or {})
    if RESERVED_CLAIMS & extra.keys():
        raise _fail("jwt_invalid_request", f"extra claims may not set {sorted(RESERVED_CLAIMS)}")
    issued_at = int(now.timestamp())
    return {
        "sub": str(request.spiffe_id),
        # One audience as a string, several as an array: what go-jose (SPIRE) emits.
        "aud": audience[0] if len(audience) == 1 else audience,
        "exp": issued_at + math.ceil(request.ttl.total_seconds()),
        "iat": issued_at,
        **extra,
    }


def mint_jwt_svids(
    requests: Sequence[JwtSvidRequest], *, key_id: str, signer: Signer, now: datetime | None = None
) -> list[str]:
    """Mint several JWT-SVIDs with one batched call to the signer (ES256 only)."""
    if not key_id:
        raise _fail("jwt_invalid_request", "key_id is required")
    curve = signer.public_key().curve.name
    if curve != _EC_ALGORITHMS[MINT_ALGORITHM][0]:
        raise _fail("jwt_unsupported_algorithm", f"signer key is {curve}; only P-256 is supported")
    at = _check_now(now)
    header = _json_encode({"alg": MINT_ALGORITHM, "kid": key_id, "typ": "JWT"})
    inputs = [f"{header}.{_json_encode(_claims_for(r, at))}" for r in requests]
    if not inputs:
        return []
    signatures = signer.sign_digests([hashlib.sha256(i.encode()).digest() for i in inputs])
    tokens = []
    for signing_input, der in zip(inputs, signatures, strict=True):
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 3.4: R || S
        tokens.append(f"{signing_input}.{_b64url_encode(raw)}")
    return tokens


def mint_jwt_svid(
    *,
    spiffe_id: SpiffeId,
    audience: Sequence[str],
    ttl: timedelta,
    key_id: str,
    signer: Signer,
    now: datetime | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Mint one JWT-SVID (ES256, kid and typ JWT in the header) signed through `signer`."""
    request = JwtSvidRequest(spiffe_id, audience, ttl, extra_claims)
    return mint_jwt_svids([request], key_id=key_id, signer=signer, now=now)[0]


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # Compared before any float(): 10**400 is a JSON integer float() cannot hold; NaN fails.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_NUMERIC_DATE
    ):
        raise _fail("jwt_malformed", f"{name} is not a NumericDate from 1970 to 9999")
    return float(value)


def _audience_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("aud")
    if value is None:
        raise _fail("jwt_missing_claim", "aud is required")
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _fail("jwt_malformed", "aud must be a string or an array of strings")
    if not values or not all(values):
        raise _fail("jwt_missing_claim", "aud must hold one or more non-empty values")
    return tuple(values)


def _parse_header(segment: str) -> tuple[str, str]:
    header = _json_object(segment, "header")
    unknown = sorted(header.keys() - ALLOWED_HEADERS)
    if unknown:
        raise _fail("jwt_malformed", f"header parameters {unknown} are not allowed")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise _fail("jwt_unsupported_algorithm", f"alg {alg!r} is not allowed for JWT-SVIDs")
    if "typ" in header and (
        not isinstance(header["typ"], str) or header["typ"] not in ALLOWED_TYPES
    ):
        raise _fail("jwt_malformed", f"typ {header['typ']!r} must be JWT or JOSE")
    kid = header.get("kid")
    if kid is None or kid == "":
        raise _fail("jwt_missing_kid", "the header has no kid")
    if not isinstance(kid, str):
        raise _fail("jwt_malformed", "kid must be a string")
    return alg, kid


def _subject_of(claims: Mapping[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise _fail("jwt_bad_subject", "sub must be a SPIFFE ID string")
    try:
        spiffe_id = SpiffeId.parse(sub)
    except InvalidSpiffeId as exc:
        raise _fail("jwt_bad_subject", f"sub: {exc.detail}") from None
    if not spiffe_id.path:
        raise _fail("jwt_bad_subject", f"sub {sub!r} has no path; it names no workload")
    return spiffe_id


def _bundle_for(bundles: BundleSource, trust_domain: TrustDomain) -> Bundle | None:
    if isinstance(bundles, Mapping):
        return bundles.get(trust_domain)
    return bundles(trust_domain)


def _verify_rsa_signature(key: object, alg: str, signing_input: bytes, signature: bytes) -> None:
    """RS* (PKCS#1 v1.5) and PS* (PSS, salt as long as the hash): RFC 7518 3.3 and 3.5."""
    if not isinstance(key, rsa.RSAPublicKey):
        raise _fail("jwt_unsupported_algorithm", f"alg {alg} does not match the key type")
    hash_type = _RSA_HASHES[alg[2:]]
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if alg.startswith("RS")
        else padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=hash_type.digest_size)
    )
    try:
        key.verify(signature, signing_input, pad, hash_type())
    except InvalidSignature:
        raise _fail("jwt_bad_signature", "signature does not verify") from None


def _verify_signature(key: object, alg: str, signing_input: bytes, signature: bytes) -> None:
    if alg[:2] in ("RS", "PS"):
        _verify_rsa_signature(key, alg, signing_input, signature)
        return
    if alg not in _EC_ALGORITHMS or not isinstance(key, ec.EllipticCurvePublicKey):
        raise _fail("jwt_unsupported_algorithm", f"alg {alg} does not match the key type")
    curve, hash_type, size = _EC_ALGORITHMS[alg]
    if key.curve.name != curve:
        raise _fail("jwt_unsupported_algorithm", f"alg {alg} does not fit a {key.curve.name} key")
    if len(signature) != 2 * size:
        raise _fail("jwt_bad_signature", f"{alg} signature must be {2 * size} bytes")
    r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    try:
        key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hash_type()))
    except InvalidSignature:
        raise _fail("jwt_bad_signature", "signature does not verify") from None


def verify_jwt_svid(
    token: str,
    *,
    audience: str,
    bundles: BundleSource,
    now: datetime | None = None,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> JwtSvid:
    """Validate a JWT-SVID against the bundle of its subject's trust domain and one audience."""
    if not audience:
        raise _fail("jwt_invalid_request", "an audience to validate against is required")
    at = _check_now(now).timestamp()
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise _fail("jwt_malformed", "token is not a string of acceptable length")
    parts = token.split(".")
    if len(parts) != 3:
        raise _fail("jwt_malformed", "not a JWS compact serialization (three parts)")
    alg, kid = _parse_header(parts[0])
    claims = _json_object(parts[1], "payload")
    signature = _b64url_decode(parts[2], "signature")
    spiffe_id = _subject_of(claims)
    trust_domain = spiffe_id.trust_domain
    bundle = _bundle_for(bundles, trust_domain)
    if bundle is None or not bundle.jwt_authorities:
        raise _fail("jwt_untrusted_domain", f"no JWT authorities for trust domain {trust_domain}")
    authority = next((a for a in bundle.jwt_authorities if a.key_id == kid), None)
    if authority is None:
        raise _fail("jwt_unknown_kid", f"no JWT authority {kid!r} in trust domain {trust_domain}")
    _verify_signature(authority.public_key, alg, f"{parts[0]}.{parts[1]}".encode(), signature)
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise _fail("jwt_missing_claim", "exp is required")
    slack = leeway.total_seconds()
    if at >= exp + slack:
        raise _fail("jwt_expired", "the token has expired")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and at + slack < nbf:
        raise _fail("jwt_not_yet_valid", "the token is not valid yet (nbf)")
    _numeric_date(claims, "iat")
    audiences = _audience_of(claims)
    if audience not in audiences:
        raise _fail("jwt_audience_mismatch", f"audience {audience!r} is not in aud")
    return JwtSvid(spiffe_id, audiences, datetime.fromtimestamp(exp, UTC), claims, token)
