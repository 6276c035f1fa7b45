"""Fuzz: SPIFFE bundles give a `Bundle` or `InvalidBundle`, never another exception or a hang."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from hallmark.bundle import Bundle, load_der_certificates, load_pem_certificates
from hallmark.spiffeid import TrustDomain
from tests.hallmark.foreign_keys import ca_certificate, jwt_jwk, x509_jwk
from tests.hallmark.fuzzing import FUZZ, clear_error_or_result, json_values

TD = TrustDomain("partner.test")
KINDS = ["ec-p256", "ec-p384", "rsa-2048", "ec-p521", "rsa-1024", "ed25519"]
GOOD_PARTS = [x509_jwk(k) for k in KINDS] + [jwt_jwk(k) for k in KINDS if k != "ed25519"]
DER = ca_certificate("ec-p256").public_bytes(serialization.Encoding.DER)

# A JWK: a real one with some of its members replaced or added by arbitrary JSON.
jwks = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from(GOOD_PARTS),
    st.dictionaries(
        st.sampled_from(["use", "kty", "crv", "x", "y", "n", "e", "kid", "x5c", "other"]),
        json_values
        | st.sampled_from(["x509-svid", "jwt-svid", "EC", "RSA", "OKP", "P-256", "P-521"])
        | st.builds(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="), st.binary()),
        max_size=3,
    ),
)
documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"keys": st.lists(jwks | json_values, max_size=5)},
        optional={"spiffe_sequence": json_values, "spiffe_refresh_hint": json_values},
    ),
)


@FUZZ
@given(documents, st.booleans())
def test_any_json_document_gives_a_bundle_or_a_clear_error(document, strict: bool) -> None:
    bundle = clear_error_or_result(lambda: Bundle.parse(TD, document, strict=strict))
    if bundle is not None:
        # what was accepted can be served to agents and read back unchanged
        again = Bundle.parse(TD, bundle.to_json(), strict=True)
        assert again.x509_authorities == bundle.x509_authorities
        assert again.jwt_authorities == bundle.jwt_authorities
        assert again.sequence == bundle.sequence


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_any_bytes_or_text_give_a_bundle_or_a_clear_error(data) -> None:
    clear_error_or_result(lambda: Bundle.parse(TD, data))


@FUZZ
@given(documents)
def test_any_serialised_document_gives_a_bundle_or_a_clear_error(document) -> None:
    clear_error_or_result(lambda: Bundle.parse(TD, json.dumps(document)))


@FUZZ
@given(st.integers(0, len(DER) - 1), st.integers(0, 255), st.integers(0, len(DER)))
def test_concatenated_der_with_a_changed_or_cut_byte_gives_certificates_or_a_clear_error(
    index: int, value: int, cut: int
) -> None:
    changed = bytearray(DER * 2)
    changed[index] = value
    clear_error_or_result(lambda: load_der_certificates(bytes(changed)))
    clear_error_or_result(lambda: load_der_certificates(DER + DER[:cut]))


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_der_give_certificates_or_a_clear_error(data: bytes) -> None:
    clear_error_or_result(lambda: load_der_certificates(data))


@FUZZ
@given(
    st.sampled_from(["ec-p256", "rsa-2048", "ec-p521", "ed25519", "dsa"]),
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=3),
    st.booleans(),
)
def test_an_x5c_certificate_with_changed_bytes_gives_a_bundle_or_a_clear_error(
    kind: str, changes: list[tuple[int, int]], strict: bool
) -> None:
    der = bytearray(ca_certificate(kind).public_bytes(serialization.Encoding.DER))
    for index, value in changes:
        der[index % len(der)] = value
    jwk = {"use": "x509-svid", "x5c": [base64.b64encode(bytes(der)).decode()]}
    clear_error_or_result(lambda: Bundle.parse(TD, {"keys": [jwk]}, strict=strict))
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der))
    clear_error_or_result(lambda: load_pem_certificates(pem + b"-----END CERTIFICATE-----\n"))
