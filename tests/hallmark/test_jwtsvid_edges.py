"""JWT-SVID edges the main suite left open: exact time limits, odd shapes, refused inputs.

Each test here kills a mutant `make mutation` found surviving in hallmark/jwtsvid.py: with
the check it names removed or shifted by one, the test fails.
"""

import base64
import datetime as dt
from typing import Any

import pytest

from hallmark.jwtsvid import MAX_TOKEN_LENGTH, JwtSvidError, JwtSvidRequest, mint_jwt_svids
from hallmark.signing import LocalSigner
from tests.hallmark.test_jwtsvid import (
    NOW,
    SIGNER,
    WORKLOAD,
    b64,
    claims,
    forge,
    mint,
    rejected,
    verify,
)


def _decoded(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _refused_to_mint(code: str, **overrides: Any) -> None:
    with pytest.raises(JwtSvidError) as info:
        mint(**overrides)
    assert info.value.code == code, info.value.detail


# --- minting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [dt.timedelta(0), dt.timedelta(seconds=-1)])
def test_minting_refuses_a_ttl_that_is_not_positive(ttl: dt.timedelta) -> None:
    _refused_to_mint("jwt_invalid_request", ttl=ttl)


def test_minting_refuses_an_empty_key_id() -> None:
    _refused_to_mint("jwt_invalid_request", key_id="")


def test_a_naive_now_is_a_programming_error_for_minting_and_verifying() -> None:
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        mint(now=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(mint(), now=naive)


def test_minting_nothing_returns_no_tokens() -> None:
    assert mint_jwt_svids([], key_id="k1", signer=SIGNER, now=NOW) == []


class _SignerLosingOneSignature(LocalSigner):
    def sign_digests(self, digests: Any) -> list[bytes]:
        return list(super().sign_digests(digests))[:-1]


def test_a_signer_answering_fewer_signatures_than_digests_fails_loudly() -> None:
    signer = _SignerLosingOneSignature.generate()
    request = JwtSvidRequest(WORKLOAD, ["reports"], dt.timedelta(minutes=5), None)

    # a token must never be paired with another token's signature or silently dropped
    with pytest.raises(ValueError, match="zip"):
        mint_jwt_svids([request, request], key_id="k1", signer=signer, now=NOW)


def test_minted_header_and_claims_are_compact_json() -> None:
    header, payload, _ = mint().split(".")
    assert b" " not in _decoded(header)
    assert b" " not in _decoded(payload)


# --- the token's shape -------------------------------------------------------------------------


def test_a_token_longer_than_the_limit_is_refused_before_parsing() -> None:
    too_long = "a" * (MAX_TOKEN_LENGTH + 1)
    with pytest.raises(JwtSvidError, match="acceptable length") as info:
        verify(too_long)
    assert info.value.code == "jwt_malformed"


def test_a_token_of_exactly_the_limit_is_parsed() -> None:
    # parsed (and refused for its content), not refused for its length
    with pytest.raises(JwtSvidError) as info:
        verify("a" * MAX_TOKEN_LENGTH)
    assert "acceptable length" not in info.value.detail


@pytest.mark.parametrize("token", [b"a.b.c", None, 42])
def test_a_token_that_is_not_a_string_is_malformed(token: Any) -> None:
    rejected(token, "jwt_malformed")


def test_a_valid_token_with_a_fourth_segment_is_refused() -> None:
    # JWS compact serialization has exactly three parts; a JWE has five
    rejected(mint() + ".extra", "jwt_malformed")
    rejected(mint() + ".a.b", "jwt_malformed")


def test_a_signature_with_zero_bytes_slipped_in_is_refused() -> None:
    # r || 00 00 || s still reads as the same integers when split at the wrong place: only
    # the exact length of R || S keeps the signature canonical
    head, body, signature = mint().split(".")
    raw = _decoded(signature)
    padded = raw[:32] + b"\x00\x00" + raw[32:]
    with pytest.raises(JwtSvidError) as info:
        verify(f"{head}.{body}.{b64(padded)}")
    assert info.value.code == "jwt_bad_signature"
    assert info.value.detail == "ES256 signature must be 64 bytes"


def test_a_kid_that_is_not_a_string_is_malformed() -> None:
    rejected(forge({"alg": "ES256", "kid": 1}, claims()), "jwt_malformed")


def test_a_subject_that_is_not_a_string_names_the_problem() -> None:
    with pytest.raises(JwtSvidError, match="must be a SPIFFE ID string") as info:
        verify(forge({"alg": "ES256", "kid": "k1"}, claims(sub=7)))
    assert info.value.code == "jwt_bad_subject"


@pytest.mark.parametrize(
    "aud",
    [{"reports": 1}, ["reports", 5], 5],
    ids=["object", "array-with-a-number", "number"],
)
def test_aud_must_be_a_string_or_an_array_of_strings(aud: Any) -> None:
    rejected(forge({"alg": "ES256", "kid": "k1"}, claims(aud=aud)), "jwt_malformed")


def test_iat_that_is_not_a_numeric_date_is_refused() -> None:
    rejected(forge({"alg": "ES256", "kid": "k1"}, claims(iat="yesterday")), "jwt_malformed")


# --- time limits, to the second ----------------------------------------------------------------


def test_a_token_is_expired_exactly_at_exp_plus_leeway() -> None:
    token = mint(ttl=dt.timedelta(seconds=60))  # exp = NOW + 60; leeway 30 s

    assert verify(token, now=NOW + dt.timedelta(seconds=89)).spiffe_id == WORKLOAD
    rejected(token, "jwt_expired", now=NOW + dt.timedelta(seconds=90))


def test_a_token_is_valid_exactly_at_nbf_minus_leeway() -> None:
    token = forge({"alg": "ES256", "kid": "k1"}, claims(nbf=int(NOW.timestamp()) + 120))

    rejected(token, "jwt_not_yet_valid", now=NOW + dt.timedelta(seconds=89))
    assert verify(token, now=NOW + dt.timedelta(seconds=90)).spiffe_id == WORKLOAD
