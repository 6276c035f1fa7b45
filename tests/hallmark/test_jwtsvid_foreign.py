"""JWT-SVIDs of federated trust domains: every algorithm SPIRE's key types sign with verifies."""

from __future__ import annotations

import time

import jwt
import pytest

from hallmark.bundle import Bundle
from hallmark.errors import HallmarkError
from hallmark.jwtsvid import verify_jwt_svid
from hallmark.spiffeid import TrustDomain
from tests.hallmark.foreign_keys import jwt_jwk, private_key

TD = TrustDomain("partner.test")
AUDIENCE = "spiffe://example.org/api"


def _bundle(kind: str) -> Bundle:
    return Bundle.parse(TD, {"keys": [jwt_jwk(kind, kid="peer")]}, strict=True)


def _token(kind: str, alg: str, **claims: object) -> str:
    body = {
        "sub": "spiffe://partner.test/workload",
        "aud": [AUDIENCE],
        "exp": int(time.time()) + 300,
        **claims,
    }
    return jwt.encode(body, private_key(kind), algorithm=alg, headers={"kid": "peer"})


@pytest.mark.parametrize(
    ("kind", "alg"),
    [
        ("rsa-2048", "RS256"),
        ("rsa-2048", "RS384"),
        ("rsa-4096", "RS512"),
        ("rsa-2048", "PS256"),
        ("rsa-4096", "PS384"),
        ("rsa-2048", "PS512"),
        ("ec-p256", "ES256"),
        ("ec-p384", "ES384"),
    ],
)
def test_a_federated_jwt_svid_of_each_spire_key_type_verifies(kind, alg) -> None:
    svid = verify_jwt_svid(_token(kind, alg), audience=AUDIENCE, bundles={TD: _bundle(kind)})

    assert str(svid.spiffe_id) == "spiffe://partner.test/workload"


def test_an_rsa_token_with_a_changed_payload_does_not_verify() -> None:
    header, _, signature = _token("rsa-2048", "RS256").split(".")
    _, payload, _ = _token("rsa-2048", "RS256", sub="spiffe://partner.test/admin").split(".")

    with pytest.raises(HallmarkError) as refused:
        verify_jwt_svid(
            f"{header}.{payload}.{signature}", audience=AUDIENCE, bundles={TD: _bundle("rsa-2048")}
        )
    assert refused.value.code == "jwt_bad_signature"


@pytest.mark.parametrize(("kind", "alg"), [("ec-p256", "RS256"), ("rsa-2048", "ES256")])
def test_an_algorithm_that_does_not_fit_the_key_is_refused(kind, alg) -> None:
    other = "rsa-2048" if kind.startswith("ec") else "ec-p256"

    with pytest.raises(HallmarkError) as refused:
        verify_jwt_svid(_token(other, alg), audience=AUDIENCE, bundles={TD: _bundle(kind)})
    assert refused.value.code == "jwt_unsupported_algorithm"


@pytest.mark.parametrize("exp", [10**400, -1, 1e300])
def test_a_numeric_date_out_of_range_is_malformed_not_an_overflow(exp) -> None:
    token = _token("ec-p256", "ES256", exp=exp)

    with pytest.raises(HallmarkError) as refused:
        verify_jwt_svid(token, audience=AUDIENCE, bundles={TD: _bundle("ec-p256")})
    assert refused.value.code == "jwt_malformed"
