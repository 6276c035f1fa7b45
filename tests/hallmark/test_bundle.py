"""SPIFFE bundles: JWKS per SPIFFE_Trust_Domain_and_Bundle.md and X509-SVID.md section 6."""

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization

from hallmark.bundle import Bundle, load_der_certificates
from hallmark.errors import InvalidBundle
from hallmark.signing import LocalSigner
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import build_signing_certificate, utcnow

TD = TrustDomain("example.org")


def _bundle(count: int = 2) -> Bundle:
    cas = []
    for _ in range(count):
        signer = LocalSigner.generate()
        cas.append(
            build_signing_certificate(
                trust_domain=TD,
                subject_key=signer.public_key(),
                signer=signer,
                not_before=utcnow(),
                not_after=utcnow() + dt.timedelta(hours=1),
            )
        )
    return Bundle(TD, tuple(cas), sequence=7)


def test_x509_authorities_are_jwks_with_use_x509_svid_one_x5c_and_no_kid() -> None:
    bundle = _bundle()
    document = json.loads(bundle.to_json())
    assert document["spiffe_sequence"] == 7
    assert document["spiffe_refresh_hint"] == 300
    for jwk, ca in zip(document["keys"], bundle.x509_authorities, strict=True):
        assert jwk["use"] == "x509-svid"
        assert "kid" not in jwk
        assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
        assert jwk["x5c"] == [
            base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode()
        ]


def test_bundle_round_trips_through_json() -> None:
    bundle = _bundle()
    parsed = Bundle.parse(TD, bundle.to_json())
    assert parsed.x509_authorities == bundle.x509_authorities
    assert parsed.sequence == 7


def test_x509_entries_without_x5c_and_unknown_uses_are_ignored() -> None:
    document = json.loads(_bundle(1).to_json())
    document["keys"].append({"kty": "EC", "use": "x509-svid"})
    document["keys"].append({"kty": "EC", "use": "something-else", "x5c": ["AAAA"]})
    assert len(Bundle.parse(TD, document).x509_authorities) == 1


def test_der_concatenation_splits_back_into_certificates() -> None:
    bundle = _bundle(3)
    assert load_der_certificates(bundle.x509_der()) == list(bundle.x509_authorities)


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"keys": 1}', b'{"keys": [1]}'])
def test_malformed_bundles_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidBundle):
        Bundle.parse(TD, data)


def _jwt_bundle() -> Bundle:
    from hallmark.bundle import JwtAuthority

    signer = LocalSigner.generate()
    return Bundle(TD, jwt_authorities=(JwtAuthority("key-1", signer.public_key()),), sequence=3)


def test_jwt_authorities_are_jwks_with_use_jwt_svid_and_a_kid() -> None:
    document = json.loads(_jwt_bundle().to_json())
    (jwk,) = document["keys"]
    assert jwk["use"] == "jwt-svid"
    assert jwk["kid"] == "key-1"
    assert jwk["kty"] == "EC" and "x5c" not in jwk
    assert json.loads(_jwt_bundle().jwt_jwks_json())["keys"][0]["kid"] == "key-1"
    assert Bundle.parse(TD, document).jwt_authorities[0].key_id == "key-1"


def test_only_the_first_x5c_value_is_used() -> None:
    first, second = _bundle(2).x509_authorities
    der = [
        base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
        for c in (first, second)
    ]
    document = {"keys": [{"kty": "EC", "use": "x509-svid", "x5c": der}]}
    assert Bundle.parse(TD, document).x509_authorities == (first,)


def test_unknown_parameters_and_a_missing_sequence_are_accepted() -> None:
    document = json.loads(_bundle(1).to_json())
    del document["spiffe_sequence"], document["spiffe_refresh_hint"]
    document["vendor_extension"] = {"anything": True}
    parsed = Bundle.parse(TD, document)
    assert len(parsed.x509_authorities) == 1 and parsed.sequence == 0


def test_unknown_key_types_are_ignored() -> None:
    document = json.loads(_jwt_bundle().to_json())
    document["keys"].append(
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "use": "jwt-svid", "kid": "k2"}
    )
    document["keys"].append({"kty": "EC", "crv": "P-999", "use": "jwt-svid", "kid": "k3"})
    assert [a.key_id for a in Bundle.parse(TD, document).jwt_authorities] == ["key-1"]
