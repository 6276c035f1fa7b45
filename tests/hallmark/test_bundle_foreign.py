"""Foreign bundles: every bad document is `InvalidBundle`, every key type SPIRE issues is served."""

from __future__ import annotations

import contextlib
import json

import pytest

from hallmark.bundle import MAX_BUNDLE_BYTES, MAX_BUNDLE_KEYS, MAX_INT64, Bundle
from hallmark.errors import InvalidBundle
from hallmark.spiffeid import TrustDomain
from tests.hallmark.foreign_keys import b64url, ca_certificate, jwt_jwk, x509_jwk

TD = TrustDomain("partner.test")
SERVED_KINDS = ["ec-p256", "ec-p384", "rsa-2048", "rsa-4096"]


def _doc(*keys: dict, **extra: object) -> dict:
    return {"keys": list(keys), "spiffe_sequence": 1, **extra}


EC_JWK = jwt_jwk("ec-p256")
BAD_DOCUMENTS = {
    "x5c is a number": _doc({"use": "x509-svid", "x5c": 123}),
    "x5c is an object": _doc({"use": "x509-svid", "x5c": {"a": 1}}),
    "x5c holds a number": _doc({"use": "x509-svid", "x5c": [123]}),
    "x5c is not base64": _doc({"use": "x509-svid", "x5c": ["!!not base64!!"]}),
    "x5c is not DER": _doc({"use": "x509-svid", "x5c": ["AAAA"]}),
    "x coordinate is a number": _doc({**EC_JWK, "x": 123}),
    "y coordinate is a list": _doc({**EC_JWK, "y": ["a"]}),
    "x coordinate is too short": _doc({**EC_JWK, "x": "AAAA"}),
    "point is not on the curve": _doc({**EC_JWK, "x": b64url(b"\x01" * 32)}),
    "crv is a list": _doc({**EC_JWK, "crv": ["P-256"]}),
    "kid is a number": _doc({**EC_JWK, "kid": 5}),
    "kid is an object": _doc({**EC_JWK, "kid": {"a": 1}}),
    "RSA modulus is a number": _doc({**jwt_jwk("rsa-2048"), "n": 7}),
    "RSA exponent is huge": _doc({**jwt_jwk("rsa-2048"), "e": b64url(b"\x01" * 64)}),
    "JWK is a string": _doc("key"),
    "keys is an object": {"keys": {"a": 1}},
    "sequence beyond int64": _doc(EC_JWK, spiffe_sequence=MAX_INT64 + 1),
    "sequence is huge": _doc(EC_JWK, spiffe_sequence=10**400),
    "sequence is negative": _doc(EC_JWK, spiffe_sequence=-1),
    "sequence is a string": _doc(EC_JWK, spiffe_sequence="5"),
    "sequence is a float": _doc(EC_JWK, spiffe_sequence=1.5),
    "sequence is a boolean": _doc(EC_JWK, spiffe_sequence=True),
    "refresh hint is a string": _doc(EC_JWK, spiffe_refresh_hint="soon"),
    "too many keys": _doc(*[EC_JWK] * (MAX_BUNDLE_KEYS + 1)),
}


@pytest.mark.parametrize("document", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_a_malformed_document_is_invalid_bundle_not_a_python_error(document) -> None:
    with pytest.raises(InvalidBundle):
        Bundle.parse(TD, document, strict=True)
    # read leniently (as agents do), the document is refused or the bad key left out
    with contextlib.suppress(InvalidBundle):
        assert EC_JWK["kid"] not in {
            a.key_id for a in Bundle.parse(TD, json.dumps(document)).jwt_authorities
        }


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"null", b"5", b'"keys"', b"\xff\xfe", "[" * 100_000, "{" * 100_000, b"{"],
    ids=["array", "null", "number", "string", "not utf-8", "deep array", "deep object", "cut"],
)
def test_a_document_that_is_not_a_json_object_is_invalid_bundle(raw) -> None:
    with pytest.raises(InvalidBundle):
        Bundle.parse(TD, raw)


def test_a_document_larger_than_the_bound_is_refused_before_it_is_parsed() -> None:
    raw = json.dumps(_doc(EC_JWK, padding="x" * MAX_BUNDLE_BYTES))

    with pytest.raises(InvalidBundle) as refused:
        Bundle.parse(TD, raw)
    assert refused.value.code == "bundle_too_large"


def test_the_largest_int64_sequence_is_accepted() -> None:
    assert Bundle.parse(TD, _doc(EC_JWK, spiffe_sequence=MAX_INT64)).sequence == MAX_INT64


@pytest.mark.parametrize("kind", SERVED_KINDS)
def test_x509_authorities_of_every_key_type_spire_issues_round_trip(kind) -> None:
    # given a peer's bundle with a CA of this key type
    parsed = Bundle.parse(TD, _doc(x509_jwk(kind)), strict=True)

    # then it is kept, re-published (as the agent API does) and read back the same
    assert parsed.x509_authorities == (ca_certificate(kind),)
    again = Bundle.parse(TD, parsed.to_json(), strict=True)
    assert again.x509_authorities == parsed.x509_authorities
    assert again.x509_der() == parsed.x509_der()


@pytest.mark.parametrize("kind", SERVED_KINDS)
def test_jwt_authorities_of_every_key_type_spire_issues_round_trip(kind) -> None:
    parsed = Bundle.parse(TD, _doc(jwt_jwk(kind, kid=kind)), strict=True)

    assert [a.key_id for a in parsed.jwt_authorities] == [kind]
    assert json.loads(parsed.jwt_jwks_json())["keys"][0] == jwt_jwk(kind, kid=kind)
    assert Bundle.parse(TD, parsed.to_json()).jwt_authorities == parsed.jwt_authorities


UNSUPPORTED = {
    "P-521 X.509 authority": lambda: x509_jwk("ec-p521"),
    "RSA-1024 X.509 authority": lambda: x509_jwk("rsa-1024"),
    "RSA-2056 X.509 authority": lambda: x509_jwk("rsa-2056"),
    "DSA X.509 authority": lambda: x509_jwk("dsa"),
    "Ed25519 X.509 authority": lambda: x509_jwk("ed25519"),
    "P-521 JWT authority": lambda: jwt_jwk("ec-p521"),
    "RSA-1024 JWT authority": lambda: jwt_jwk("rsa-1024"),
    "Ed25519 JWT authority": lambda: {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(b"\x00" * 32),
        "use": "jwt-svid",
        "kid": "e",
    },
    "symmetric JWT key": lambda: {"kty": "oct", "k": "AAAA", "use": "jwt-svid", "kid": "s"},
}


@pytest.mark.parametrize("make", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_keys_no_spiffe_implementation_issues_are_refused_at_input_and_skipped_when_read(
    make,
) -> None:
    document = _doc(make(), jwt_jwk("ec-p256", kid="good"))

    with pytest.raises(InvalidBundle) as refused:
        Bundle.parse(TD, document, strict=True)
    assert refused.value.code == "unsupported_key_type"
    lenient = Bundle.parse(TD, document)
    assert not lenient.x509_authorities
    assert [a.key_id for a in lenient.jwt_authorities] == ["good"]
