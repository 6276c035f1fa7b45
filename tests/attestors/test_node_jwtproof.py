"""The published-keys cache behind gcp_iit, azure_msi and k8s_psat's JWKS verification."""

from __future__ import annotations

from typing import Any

import pytest

from attestors.node import jwtproof
from attestors.node.base import HttpAnswer, InvalidAttestationPayload, NodeAttestationFailed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Publisher:
    """A JWKS endpoint's answers, counted: the key set it publishes now."""

    def __init__(self, *kids: str) -> None:
        self.kids = list(kids)
        self.fetches = 0

    def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        return {"keys": [{"kid": kid, "kty": "RSA"} for kid in self.kids]}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(jwtproof.time, "monotonic", clock)
    return clock


def kids_of(document: dict[str, Any]) -> list[str]:
    return [key["kid"] for key in document["keys"]]


def test_known_keys_are_served_from_the_cache_until_they_age_out(clock: Clock) -> None:
    cache, jwks = jwtproof.JwksCache(), Publisher("k1")

    first = cache.get("https://idp/jwks", "", fetch=jwks, kid="k1")
    clock.now += jwtproof.JWKS_CACHE_SECONDS - 1
    again = cache.get("https://idp/jwks", "", fetch=jwks, kid="k1")
    assert (kids_of(first), kids_of(again), jwks.fetches) == (["k1"], ["k1"], 1)

    jwks.kids = ["k2"]
    clock.now += 1
    aged = cache.get("https://idp/jwks", "", fetch=jwks, kid="k1")
    assert (kids_of(aged), jwks.fetches) == (["k2"], 2)


def test_an_unknown_kid_refetches_but_not_more_often_than_the_floor(clock: Clock) -> None:
    cache, jwks = jwtproof.JwksCache(), Publisher("old")
    cache.get("https://idp/jwks", "", fetch=jwks, kid="old")
    jwks.kids = ["old", "new"]

    clock.now += jwtproof.JWKS_REFRESH_FLOOR - 1
    early = cache.get("https://idp/jwks", "", fetch=jwks, kid="new")
    assert (kids_of(early), jwks.fetches) == (["old"], 1)  # a kid flood buys no fetches

    clock.now += 1
    rotated = cache.get("https://idp/jwks", "", fetch=jwks, kid="new")
    assert (kids_of(rotated), jwks.fetches) == (["old", "new"], 2)


def test_each_url_and_ca_bundle_has_its_own_keys_and_clear_forgets_them(clock: Clock) -> None:
    cache = jwtproof.JwksCache()
    a, b, other_ca = Publisher("a"), Publisher("b"), Publisher("c")

    assert kids_of(cache.get("https://a/jwks", "", fetch=a, kid="a")) == ["a"]
    assert kids_of(cache.get("https://b/jwks", "", fetch=b, kid="a")) == ["b"]
    assert kids_of(cache.get("https://a/jwks", "PEM", fetch=other_ca, kid="a")) == ["c"]
    cache.clear()
    cache.get("https://a/jwks", "", fetch=a, kid="a")
    assert (a.fetches, b.fetches, other_ca.fetches) == (2, 1, 1)


class Answering:
    """A lookup whose HTTPS requests get one fixed answer (the endpoint's side of fetch_json)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.answer = HttpAnswer(status=status, body=body)

    def https(self, method: str, url: str, **_: Any) -> HttpAnswer:
        return self.answer


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, b'{"keys": []}'), (404, b"{}"), (200, b"<html>"), (200, b"\xff\xfe")],
    ids=["server-error", "not-found", "not-json", "not-text"],
)
def test_an_answer_that_is_not_a_2xx_json_document_is_attestor_unreachable(status, body) -> None:
    with pytest.raises(NodeAttestationFailed) as refused:
        jwtproof.fetch_json(Answering(status, body), "GET", "https://idp/jwks", ca="")

    assert refused.value.code == "attestor_unreachable"


def test_a_2xx_json_document_is_returned_as_parsed() -> None:
    answer = jwtproof.fetch_json(Answering(203, b'{"keys": [1]}'), "GET", "https://i/j", ca="")

    assert answer == {"keys": [1]}


def test_a_token_that_is_not_a_jwt_is_invalid_token() -> None:
    with pytest.raises(NodeAttestationFailed) as refused:
        jwtproof.verify_jwt(
            "not.a-jwt", lookup=Answering(200, b"{}"), audience=["a"], issuer=None, jwks={}
        )

    assert refused.value.code == "invalid_token"


@pytest.fixture(scope="module")
def signer() -> dict[str, Any]:
    import json

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key, stranger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {"key": key, "stranger": stranger, "jwks": {"keys": [{**public, "kid": "k1"}]}}


def _token(signer: dict[str, Any], *, key: str = "key", kid: str = "k1", **claims: Any) -> str:
    import time as clock

    import jwt

    now = int(clock.time())
    body = {"iss": "https://idp", "aud": "hallmark", "iat": now, "exp": now + 300, **claims}
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, signer[key], algorithm="ES256", headers={"kid": kid})


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"kid": "k2"}, "unknown_signing_key"),
        ({"key": "stranger"}, "invalid_token"),
        ({"exp": 1_000_000}, "token_expired"),
        ({"nbf": 4_000_000_000}, "token_not_yet_valid"),
        ({"aud": "someone-else"}, "invalid_audience"),
        ({"iss": "https://other-idp"}, "invalid_issuer"),
        ({"exp": None}, "invalid_token"),
    ],
    ids=["unknown-kid", "forged", "expired", "not-yet", "audience", "issuer", "no-exp"],
)
def test_each_bad_token_is_refused_with_its_code(signer, change, code) -> None:
    with pytest.raises(NodeAttestationFailed) as refused:
        jwtproof.verify_jwt(
            _token(signer, **change),
            lookup=Answering(500, b""),
            audience=["hallmark"],
            issuer="https://idp",
            jwks=signer["jwks"],
        )

    assert refused.value.code == code


def test_a_jwks_that_is_not_a_key_set_is_invalid_jwks(signer) -> None:
    with pytest.raises(NodeAttestationFailed) as refused:
        jwtproof.verify_jwt(
            _token(signer),
            lookup=Answering(500, b""),
            audience=["hallmark"],
            issuer="https://idp",
            jwks={"keys": "nope"},
        )

    assert refused.value.code == "invalid_jwks"


def test_a_good_token_gives_its_claims(signer) -> None:
    claims = jwtproof.verify_jwt(
        _token(signer, sub="node-1"),
        lookup=Answering(500, b""),
        audience=["hallmark"],
        issuer="https://idp",
        jwks=signer["jwks"],
    )

    assert claims["sub"] == "node-1" and claims["aud"] == "hallmark"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff",
        b'["token"]',
        b'{"token": 42}',
        b'{"token": ""}',
        b'{"other": "x"}',
        b'{"token": "' + b"a" * (jwtproof.MAX_TOKEN + 1) + b'"}',
    ],
    ids=["not-json", "not-text", "not-object", "number", "empty", "missing", "too-long"],
)
def test_a_payload_that_is_not_one_token_is_invalid(payload) -> None:
    with pytest.raises(InvalidAttestationPayload):
        jwtproof.token_payload(payload, "gcp_iit")


def test_a_token_of_the_largest_size_is_taken() -> None:
    token = "a" * jwtproof.MAX_TOKEN

    assert jwtproof.token_payload(b'{"token": "' + token.encode() + b'"}', "gcp_iit") == token


def test_claims_and_expiry_before_verification(signer) -> None:
    claims = jwtproof.unverified_claims(_token(signer, exp=2_000_000_000))

    assert jwtproof.expiry(claims).year == 2033  # noqa: PLR2004
    for bad in ({}, {"exp": "soon"}):
        with pytest.raises(NodeAttestationFailed) as refused:
            jwtproof.expiry(bad)
        assert refused.value.code == "invalid_token"
    with pytest.raises(NodeAttestationFailed) as refused:
        jwtproof.unverified_claims("not-a-jwt")
    assert refused.value.code == "invalid_token"
