"""Fuzz: JWT-SVID validation gives a valid SVID or `JwtSvidError`, never another exception."""

from __future__ import annotations

import base64
import json
import time

import jwt
from hypothesis import given
from hypothesis import strategies as st

from hallmark.bundle import Bundle
from hallmark.jwtsvid import verify_jwt_svid
from hallmark.spiffeid import TrustDomain
from tests.hallmark.foreign_keys import jwt_jwk, private_key
from tests.hallmark.fuzzing import FUZZ, clear_error_or_result, json_values

TD = TrustDomain("partner.test")
AUDIENCE = "spiffe://example.org/api"
BUNDLES = {
    TD: Bundle.parse(
        TD, {"keys": [jwt_jwk("ec-p256", kid="ec"), jwt_jwk("rsa-2048", kid="rsa")]}, strict=True
    )
}
CLAIMS = {"sub": "spiffe://partner.test/w", "aud": [AUDIENCE], "exp": int(time.time()) + 3600}
GOOD = [
    jwt.encode(CLAIMS, private_key("ec-p256"), algorithm="ES256", headers={"kid": "ec"}),
    jwt.encode(CLAIMS, private_key("rsa-2048"), algorithm="PS256", headers={"kid": "rsa"}),
]


def _segment(value: object) -> str:
    try:
        raw = json.dumps(value).encode()
    except (TypeError, ValueError):
        raw = b"{}"
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _verify(token: object) -> None:
    svid = clear_error_or_result(
        lambda: verify_jwt_svid(token, audience=AUDIENCE, bundles=BUNDLES)  # type: ignore[arg-type]
    )
    if svid is not None:
        assert svid.spiffe_id.trust_domain == TD
        assert AUDIENCE in svid.audience


headers = st.builds(
    lambda changes: {"alg": "ES256", "kid": "ec", **changes},
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "jku", "crit"]),
        json_values | st.sampled_from(["RS256", "PS512", "ES384", "none", "HS256", "rsa", "ec"]),
        max_size=2,
    ),
)
payloads = st.builds(
    lambda changes: {**CLAIMS, **changes},
    st.dictionaries(
        st.sampled_from(["sub", "aud", "exp", "nbf", "iat", "x"]), json_values, max_size=3
    ),
)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=50), st.none(), st.integers()))
def test_arbitrary_tokens_give_a_clear_error(token: object) -> None:
    _verify(token)


@FUZZ
@given(headers, payloads, st.sampled_from(GOOD), st.binary(max_size=600))
def test_tokens_of_any_header_and_claims_give_a_clear_error(header, payload, good, signature):
    # a real signature of another token, or arbitrary bytes
    real = good.split(".")[2]
    fake = base64.urlsafe_b64encode(signature).decode().rstrip("=")
    for sig in (real, fake):
        _verify(f"{_segment(header)}.{_segment(payload)}.{sig}")


@FUZZ
@given(st.sampled_from(GOOD), st.integers(0, 2000), st.characters(codec="ascii"))
def test_a_valid_token_with_one_changed_character_gives_an_svid_or_a_clear_error(
    token: str, index: int, character: str
) -> None:
    position = index % len(token)
    _verify(token[:position] + character + token[position + 1 :])
