"""JWT-SVIDs per JWT-SVID.md: minting through a Signer, validation, and the negative suite."""

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hallmark.bundle import Bundle, JwtAuthority, ec_public_jwk
from hallmark.jwtsvid import (
    ALLOWED_ALGORITHMS,
    JwtSvid,
    JwtSvidError,
    JwtSvidRequest,
    mint_jwt_svid,
    mint_jwt_svids,
    verify_jwt_svid,
)
from hallmark.signing import LocalSigner
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import build_signing_certificate

TD = TrustDomain("example.org")
OTHER_TD = TrustDomain("other.org")
WORKLOAD = TD.spiffe_id("/ns/prod/sa/web")
NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = LocalSigner(KEY)
BUNDLES = {TD: Bundle(TD, jwt_authorities=(JwtAuthority("k1", KEY.public_key()),))}
HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "sub": str(WORKLOAD),
        "aud": "reports",
        "exp": int(NOW.timestamp()) + 300,
        "iat": int(NOW.timestamp()),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def forge(
    header: dict[str, Any], payload: dict[str, Any], key: ec.EllipticCurvePrivateKey = KEY
) -> str:
    """Sign any header and payload with an EC key as a JWS, the way an attacker could."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    alg = header.get("alg", "ES256")
    bits = alg[2:] if alg[:2] == "ES" else "256"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(HASHES[bits])))
    size = (key.curve.key_size + 7) // 8
    return f"{signing_input}.{b64(r.to_bytes(size, 'big') + s.to_bytes(size, 'big'))}"


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def verify(token: str, audience: str = "reports", **kwargs: Any) -> JwtSvid:
    kwargs.setdefault("bundles", BUNDLES)
    kwargs.setdefault("now", NOW)
    return verify_jwt_svid(token, audience=audience, **kwargs)


def rejected(token: str, code: str, **kwargs: Any) -> None:
    with pytest.raises(JwtSvidError) as info:
        verify(token, **kwargs)
    assert info.value.code == code, info.value.detail


def mint(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "spiffe_id": WORKLOAD,
        "audience": ["reports"],
        "ttl": dt.timedelta(minutes=5),
        "key_id": "k1",
        "signer": SIGNER,
        "now": NOW,
    }
    args.update(overrides)
    return mint_jwt_svid(**args)


def segments(token: str) -> list[Any]:
    head, body, _ = token.split(".")
    return [json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (head, body)]


# --- minting ---------------------------------------------------------------------------------


def test_minted_token_round_trips_through_verify() -> None:
    token = mint()

    svid = verify(token)

    assert svid.spiffe_id == WORKLOAD
    assert svid.audience == ("reports",)
    assert svid.expiry == NOW + dt.timedelta(minutes=5)
    assert svid.token == token
    assert svid.claims["sub"] == str(WORKLOAD)


def test_minted_token_is_compact_jws_with_only_alg_kid_and_typ_headers() -> None:
    token = mint()

    header, _ = segments(token)

    assert token.count(".") == 2 and not token.startswith("{")
    assert header == {"alg": "ES256", "kid": "k1", "typ": "JWT"}


def test_minted_claims_are_sub_single_string_aud_exp_and_iat() -> None:
    _, payload = segments(mint())

    assert payload == {
        "sub": str(WORKLOAD),
        "aud": "reports",
        "exp": int(NOW.timestamp()) + 300,
        "iat": int(NOW.timestamp()),
    }


def test_several_audiences_are_minted_as_an_array_and_each_one_validates() -> None:
    token = mint(audience=["reports", "billing"])

    _, payload = segments(token)

    assert payload["aud"] == ["reports", "billing"]
    assert verify(token, "billing").audience == ("reports", "billing")
    assert verify(token, "reports").audience == ("reports", "billing")


def test_extra_claims_are_carried_but_cannot_replace_registered_ones() -> None:
    token = mint(extra_claims={"jti": "abc"})
    assert verify(token).claims["jti"] == "abc"

    with pytest.raises(JwtSvidError) as info:
        mint(extra_claims={"sub": "spiffe://example.org/admin"})

    assert info.value.code == "jwt_invalid_request"


@pytest.mark.parametrize("audience", [[], [""], ["reports", ""]])
def test_minting_refuses_a_missing_or_empty_audience(audience: list[str]) -> None:
    with pytest.raises(JwtSvidError) as info:
        mint(audience=audience)

    assert info.value.code == "jwt_invalid_request"


def test_minting_refuses_a_subject_without_a_path() -> None:
    with pytest.raises(JwtSvidError) as info:
        mint(spiffe_id=TD.id)

    assert info.value.code == "jwt_invalid_request"


def test_minting_refuses_a_signer_that_is_not_p256() -> None:
    signer = LocalSigner(ec.generate_private_key(ec.SECP384R1()))

    with pytest.raises(JwtSvidError) as info:
        mint(signer=signer)

    assert info.value.code == "jwt_unsupported_algorithm"


class CountingSigner(LocalSigner):
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        super().__init__(key)
        self.batches: list[int] = []

    def sign_digests(self, digests: Sequence[bytes]) -> list[bytes]:
        self.batches.append(len(digests))
        return super().sign_digests(digests)


def test_mint_jwt_svids_signs_all_tokens_in_one_batch() -> None:
    signer = CountingSigner(KEY)
    requests = [
        JwtSvidRequest(TD.spiffe_id(f"/w{i}"), ["reports"], dt.timedelta(minutes=1))
        for i in range(5)
    ]

    tokens = mint_jwt_svids(requests, key_id="k1", signer=signer, now=NOW)

    assert signer.batches == [5]
    assert [verify(t).spiffe_id for t in tokens] == [r.spiffe_id for r in requests]


def test_minted_token_validates_with_pyjwt() -> None:
    token = mint(now=None)

    claims_ = jwt.decode(
        token,
        KEY.public_key(),
        algorithms=["ES256"],
        audience="reports",
        options={"require": ["exp", "aud", "sub", "iat"]},
    )

    assert claims_["sub"] == str(WORKLOAD)
    assert jwt.get_unverified_header(token)["kid"] == "k1"


def test_minted_token_validates_with_py_spiffe_using_the_bundle_jwks() -> None:
    from spiffe import JwtBundle
    from spiffe import JwtSvid as PySpiffeJwtSvid
    from spiffe import TrustDomain as PySpiffeTrustDomain

    bundle = JwtBundle.parse(PySpiffeTrustDomain("example.org"), BUNDLES[TD].jwt_jwks_json())

    svid = PySpiffeJwtSvid.parse_and_validate(mint(now=None), bundle, {"reports"})

    assert str(svid.spiffe_id) == str(WORKLOAD)


# --- validation: what is accepted ----------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "curve"),
    [("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1()), ("ES512", ec.SECP521R1())],
)
def test_every_ecdsa_algorithm_validates_with_a_key_of_its_curve(
    alg: str, curve: ec.EllipticCurve
) -> None:
    key = ec.generate_private_key(curve)
    bundles = {TD: Bundle(TD, jwt_authorities=(JwtAuthority("k", key.public_key()),))}

    svid = verify(forge({"alg": alg, "kid": "k"}, claims(), key), bundles=bundles)

    assert svid.spiffe_id == WORKLOAD


@pytest.mark.parametrize("typ", ["JWT", "JOSE", None])
def test_typ_jwt_jose_or_absent_is_accepted(typ: str | None) -> None:
    header = {"alg": "ES256", "kid": "k1", **({"typ": typ} if typ else {})}

    assert verify(forge(header, claims())).spiffe_id == WORKLOAD


def test_bundles_may_be_a_lookup_callable() -> None:
    assert verify(mint(), bundles=BUNDLES.get).spiffe_id == WORKLOAD
    rejected(mint(), "jwt_untrusted_domain", bundles=lambda td: None)


def test_expiry_within_leeway_is_accepted_and_past_it_is_not() -> None:
    token = mint(ttl=dt.timedelta(seconds=60))

    assert verify(token, now=NOW + dt.timedelta(seconds=80)).spiffe_id == WORKLOAD
    rejected(token, "jwt_expired", now=NOW + dt.timedelta(seconds=91))


# --- the negative suite ------------------------------------------------------------------------


def test_alg_none_is_rejected() -> None:
    token = f"{b64json({'alg': 'none', 'kid': 'k1', 'typ': 'JWT'})}.{b64json(claims())}."

    rejected(token, "jwt_unsupported_algorithm")


def test_alg_is_checked_before_anything_else_is_processed() -> None:
    token = f"{b64json({'alg': 'none'})}.not-json.!!"

    rejected(token, "jwt_unsupported_algorithm")


@pytest.mark.parametrize("form", ["pem", "jwk"])
def test_hs256_signed_with_the_public_key_is_rejected(form: str) -> None:
    public = KEY.public_key()
    secret = (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if form == "pem"
        else json.dumps(ec_public_jwk(public)).encode()
    )

    rejected(
        hs256({"alg": "HS256", "kid": "k1", "typ": "JWT"}, claims(), secret),
        "jwt_unsupported_algorithm",
    )


@pytest.mark.parametrize(
    "alg", ["HS256", "HS384", "HS512", "EdDSA", "ES256K", "es256", "", None, 256]
)
def test_algorithms_outside_rfc7518_3_3_to_3_5_are_rejected(alg: Any) -> None:
    header = {"kid": "k1", **({} if alg is None else {"alg": alg})}

    rejected(
        forge({**header, "alg": "ES256"}, claims()).replace(
            b64json({**header, "alg": "ES256"}), b64json(header), 1
        ),
        "jwt_unsupported_algorithm",
    )


def test_the_allowed_algorithms_are_exactly_the_nine_of_jwt_svid_2_1() -> None:
    assert sorted(ALLOWED_ALGORITHMS) == sorted(
        f"{f}{b}" for f in ("RS", "ES", "PS") for b in (256, 384, 512)
    )


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES384", "ES512"])
def test_an_allowed_alg_that_does_not_fit_the_authority_key_is_rejected(alg: str) -> None:
    token = forge({"alg": "ES256", "kid": "k1"}, claims())
    _, body, sig = token.split(".")

    rejected(f"{b64json({'alg': alg, 'kid': 'k1'})}.{body}.{sig}", "jwt_unsupported_algorithm")


@pytest.mark.parametrize("kid", [None, ""])
def test_missing_kid_is_rejected(kid: str | None) -> None:
    header = {"alg": "ES256", **({} if kid is None else {"kid": kid})}

    rejected(forge(header, claims()), "jwt_missing_kid")


def test_unknown_kid_is_rejected() -> None:
    rejected(mint(key_id="k2"), "jwt_unknown_kid")


def test_wrong_audience_is_rejected() -> None:
    rejected(mint(audience=["billing"]), "jwt_audience_mismatch")


@pytest.mark.parametrize("aud", [None, [], "", [""]])
def test_missing_or_empty_aud_is_rejected(aud: Any) -> None:
    payload = {k: v for k, v in claims().items() if k != "aud"}
    if aud is not None:
        payload["aud"] = aud

    rejected(forge({"alg": "ES256", "kid": "k1"}, payload), "jwt_missing_claim")


def test_missing_exp_is_rejected() -> None:
    payload = {k: v for k, v in claims().items() if k != "exp"}

    rejected(forge({"alg": "ES256", "kid": "k1"}, payload), "jwt_missing_claim")


@pytest.mark.parametrize("exp", ["1893499200", True, 1e400])
def test_exp_that_is_not_a_numeric_date_is_rejected(exp: Any) -> None:
    rejected(forge({"alg": "ES256", "kid": "k1"}, claims(exp=exp)), "jwt_malformed")


def test_expired_token_is_rejected() -> None:
    rejected(mint(), "jwt_expired", now=NOW + dt.timedelta(minutes=6))


def test_token_before_its_nbf_is_rejected() -> None:
    token = forge({"alg": "ES256", "kid": "k1"}, claims(nbf=int(NOW.timestamp()) + 120))

    rejected(token, "jwt_not_yet_valid")
    assert verify(token, now=NOW + dt.timedelta(seconds=120)).spiffe_id == WORKLOAD


def test_subject_in_a_trust_domain_without_a_bundle_is_rejected() -> None:
    token = mint(spiffe_id=OTHER_TD.spiffe_id("/intruder"))

    rejected(token, "jwt_untrusted_domain")


def test_key_of_one_trust_domain_cannot_vouch_for_another_with_the_same_kid() -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    bundles = {
        **BUNDLES,
        OTHER_TD: Bundle(OTHER_TD, jwt_authorities=(JwtAuthority("k1", other_key.public_key()),)),
    }

    rejected(mint(spiffe_id=OTHER_TD.spiffe_id("/w")), "jwt_bad_signature", bundles=bundles)


def test_only_jwt_authorities_of_the_bundle_are_used_not_x509_ones() -> None:
    ca = build_signing_certificate(
        trust_domain=TD,
        subject_key=KEY.public_key(),
        signer=SIGNER,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=1),
    )

    rejected(mint(), "jwt_untrusted_domain", bundles={TD: Bundle(TD, x509_authorities=(ca,))})


def test_tampered_payload_is_rejected() -> None:
    header, _, signature = mint().split(".")
    forged_body = b64json(claims(sub="spiffe://example.org/admin"))

    rejected(f"{header}.{forged_body}.{signature}", "jwt_bad_signature")


def test_tampered_header_is_rejected() -> None:
    _, body, signature = mint().split(".")
    forged_header = b64json({"alg": "ES256", "kid": "k1", "typ": "JOSE"})

    rejected(f"{forged_header}.{body}.{signature}", "jwt_bad_signature")


def test_signature_by_another_key_under_a_known_kid_is_rejected() -> None:
    intruder = ec.generate_private_key(ec.SECP256R1())

    rejected(forge({"alg": "ES256", "kid": "k1"}, claims(), intruder), "jwt_bad_signature")


def test_der_or_truncated_signature_is_rejected() -> None:
    signing_input = mint().rsplit(".", 1)[0]
    der = KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))

    rejected(f"{signing_input}.{b64(der)}", "jwt_bad_signature")
    rejected(f"{mint()[:-4]}", "jwt_bad_signature")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "ES256", "kid": "k1", "typ": "JWS"},
        {"alg": "ES256", "kid": "k1", "typ": "at+jwt"},
        {"alg": "ES256", "kid": "k1", "jku": "https://evil.example/jwks"},
        {"alg": "ES256", "kid": "k1", "crit": ["exp"]},
        {"alg": "ES256", "kid": "k1", "x5c": []},
    ],
)
def test_typ_other_than_jwt_or_jose_and_undescribed_headers_are_rejected(
    header: dict[str, Any],
) -> None:
    rejected(forge(header, claims()), "jwt_malformed")


@pytest.mark.parametrize(
    "token",
    [
        "abc.def",
        "a.b.c.d",
        "",
        f"{b64json({'alg': 'ES256', 'kid': 'k1'})}.eyJ+.sig",
        f"{b64json({'alg': 'ES256', 'kid': 'k1'})}.{b64(b'not json')}.c2ln",
        f"{b64json({'alg': 'ES256', 'kid': 'k1'})}.{b64json(['a'])}.c2ln",
        f"{b64json({'alg': 'ES256', 'kid': 'k1'})}=.{b64json(claims())}.c2ln",
        "!!.e30.c2ln",
        b64(b'{"alg":"ES256","alg":"none","kid":"k1"}') + "." + b64json(claims()) + ".c2ln",
        json.dumps(
            {
                "payload": b64json(claims()),
                "signatures": [
                    {"protected": b64json({"alg": "ES256", "kid": "k1"}), "signature": "c2ln"}
                ],
            }
        ),
    ],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    rejected(token, "jwt_malformed")


@pytest.mark.parametrize(
    "sub",
    ["spiffe://example.org", "spiffe://example.org/", "web", "https://example.org/web", None, 42],
)
def test_subject_that_is_not_a_workload_spiffe_id_is_rejected(sub: Any) -> None:
    payload = {k: v for k, v in claims().items() if k != "sub"}
    if sub is not None:
        payload["sub"] = sub

    rejected(forge({"alg": "ES256", "kid": "k1"}, payload), "jwt_bad_subject")


def test_verifying_needs_an_audience() -> None:
    with pytest.raises(JwtSvidError) as info:
        verify(mint(), audience="")

    assert info.value.code == "jwt_invalid_request"
