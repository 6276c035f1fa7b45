"""Signed-JWT proofs (cloud identity tokens): verification against published keys (JWKS)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import jwt

from attestors.node.base import (
    DEFAULT_CLOCK_SKEW,
    InvalidAttestationPayload,
    NodeAttestationFailed,
    NodeLookup,
)

MAX_TOKEN = 16 * 1024  # bytes of a token in an attestation payload
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512"]
JWKS_CACHE_SECONDS = 300.0
JWKS_REFRESH_FLOOR = 10.0


class JwksCache:
    """Published keys by URL, kept a few minutes; refetched early on an unknown `kid`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def get(self, url: str, ca: str, *, fetch: Any, kid: str | None) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            held = self._keys.get((url, ca))
        if held is not None:
            age = now - held[0]
            kids = {k.get("kid") for k in held[1].get("keys", []) if isinstance(k, dict)}
            if age < JWKS_CACHE_SECONDS and (kid in kids or age < JWKS_REFRESH_FLOOR):
                return held[1]
        document: dict[str, Any] = fetch()
        with self._lock:
            self._keys[(url, ca)] = (now, document)
        return document


JWKS_CACHE = JwksCache()


def fetch_json(
    lookup: NodeLookup,
    method: str,
    url: str,
    *,
    ca: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    answer = lookup.https(method, url, body=body, headers=headers, ca_bundle_pem=ca or None)
    if answer.status // 100 != 2:  # noqa: PLR2004
        raise NodeAttestationFailed(
            f"{url} answered HTTP {answer.status}", code="attestor_unreachable"
        )
    try:
        return json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        raise NodeAttestationFailed(
            f"{url} did not answer JSON", code="attestor_unreachable"
        ) from None


def verify_jwt(  # noqa: PLR0913 - one token's checks
    token: str,
    *,
    lookup: NodeLookup,
    audience: list[str],
    issuer: str | None,
    jwks: Mapping[str, Any] | None = None,
    jwks_url: str | None = None,
    ca_bundle_pem: str = "",
) -> dict[str, Any]:
    """The claims of `token` once its signature (by a key of `jwks` or the document at
    `jwks_url`), audience, issuer and times (with clock skew) hold; else a coded failure."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise NodeAttestationFailed("the token is not a JWT", code="invalid_token") from None
    kid = header.get("kid")
    document = jwks
    if document is None:
        assert jwks_url is not None
        document = JWKS_CACHE.get(
            jwks_url,
            ca_bundle_pem,
            kid=kid,
            fetch=lambda: fetch_json(lookup, "GET", jwks_url, ca=ca_bundle_pem),
        )
    try:
        keys = jwt.PyJWKSet.from_dict(dict(document)).keys
    except (jwt.PyJWTError, TypeError, KeyError, AttributeError, ValueError):
        raise NodeAttestationFailed(
            "the published JWKS is not usable", code="invalid_jwks"
        ) from None
    key = next((k for k in keys if kid is None or k.key_id == kid), None)
    if key is None:
        raise NodeAttestationFailed(f"no key {kid!r} in the JWKS", code="unknown_signing_key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            leeway=DEFAULT_CLOCK_SKEW,
            options={"require": ["exp", "iat", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise NodeAttestationFailed("the token has expired", code="token_expired") from None
    except jwt.ImmatureSignatureError:
        raise NodeAttestationFailed(
            "the token is not valid yet", code="token_not_yet_valid"
        ) from None
    except jwt.InvalidAudienceError:
        raise NodeAttestationFailed(
            "the token's audience is not one configured", code="invalid_audience"
        ) from None
    except jwt.InvalidIssuerError:
        raise NodeAttestationFailed(
            "the token's issuer is not the configured one", code="invalid_issuer"
        ) from None
    except jwt.PyJWTError as exc:
        raise NodeAttestationFailed(
            f"the token does not verify: {exc}", code="invalid_token"
        ) from None
    return claims


def expiry(claims: Mapping[str, Any]) -> dt.datetime:
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise NodeAttestationFailed("the token has no expiry", code="invalid_token")
    return dt.datetime.fromtimestamp(exp, dt.UTC)


def token_payload(payload: bytes, attestation_type: str) -> str:
    """The JWT of a `{"token": "<JWT>"}` attestation payload (gcp_iit, azure_msi)."""
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise InvalidAttestationPayload(
            f"{attestation_type} attestation data is not JSON"
        ) from None
    token = message.get("token") if isinstance(message, dict) else None
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise InvalidAttestationPayload(
            f'{attestation_type} attestation data must be {{"token": "<JWT>"}}'
        )
    return token


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims before any check, to pick the keys or endpoint that will verify them."""
    try:
        return dict(jwt.decode(token, options={"verify_signature": False}))
    except jwt.PyJWTError:
        raise NodeAttestationFailed("the token is not a JWT", code="invalid_token") from None


def proof_id(attestation_type: str, token: str) -> str:
    """What makes a token usable once: its type and the SHA-256 of its bytes."""
    return f"{attestation_type}:" + hashlib.sha256(token.encode()).hexdigest()
