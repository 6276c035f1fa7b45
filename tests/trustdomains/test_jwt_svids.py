"""Minting JWT-SVIDs through OpenBao: JWT-SVID.md claims and header, bundle checks, isolation."""

from __future__ import annotations

import base64
import datetime as dt
import json

import jwt
import pytest

from hallmark.errors import InvalidSvid
from hallmark.jwtsvid import JwtSvidError, JwtSvidRequest, verify_jwt_svid
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import utcnow
from trustdomains import services
from trustdomains.keymanagers import KeyManagerUnavailable
from trustdomains.models import JwtAuthority

pytestmark = pytest.mark.django_db(transaction=True)


def request(trust_domain: str, path: str, audience=("svc",), ttl: int = 300) -> JwtSvidRequest:
    spiffe_id = SpiffeId.parse(f"spiffe://{trust_domain}{path}")
    return JwtSvidRequest(spiffe_id, list(audience), dt.timedelta(seconds=ttl))


def segments(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    decode = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def mint_and_bundle(handle, requests):
    with handle.schema():
        tokens = services.mint_jwt_svids(requests)
        bundle = services.current_bundle()
        authority = JwtAuthority.objects.get(status="active")
    return tokens, bundle, authority


def test_minted_jwt_svids_verify_against_the_current_bundle(tenant_a):
    # given several JWT-SVID requests of tenant A, one with two audiences
    td = tenant_a.trust_domain
    requests = [request(td, f"/workload/{i}") for i in range(4)]
    requests.append(request(td, "/multi", audience=("svc", "other")))

    # when they are minted in one batch
    tokens, bundle, authority = mint_and_bundle(tenant_a, requests)

    # then each verifies against the tenant's bundle and names the requested subject
    assert len(tokens) == len(requests)
    for token, wanted in zip(tokens, requests, strict=True):
        svid = verify_jwt_svid(token, audience="svc", bundles={TrustDomain(td): bundle})
        assert svid.spiffe_id == wanted.spiffe_id
        assert svid.audience == tuple(wanted.audience)
    assert verify_jwt_svid(tokens[-1], audience="other", bundles={TrustDomain(td): bundle})
    assert len(set(tokens)) == len(tokens)
    assert authority.key_id in [a.key_id for a in bundle.jwt_authorities]


def test_jwt_svid_header_and_claims_follow_jwt_svid_md(tenant_a):
    # given one minted JWT-SVID
    [token], _, authority = mint_and_bundle(tenant_a, [request(tenant_a.trust_domain, "/w")])

    # when its header and claims are decoded
    header, claims = segments(token)

    # then: compact JWS (3 parts), alg from the allowed set, the authority's kid, typ JWT,
    # only the allowed header parameters; sub, aud, exp and iat set
    assert token.count(".") == 2
    assert header == {"alg": "ES256", "kid": authority.key_id, "typ": "JWT"}
    assert claims["sub"] == f"spiffe://{tenant_a.trust_domain}/w"
    assert claims["aud"] == "svc"
    assert claims["exp"] - claims["iat"] == 300


def test_jwt_svid_verifies_with_pyjwt_using_the_published_jwk(tenant_a):
    # given a minted token and the bundle JSON tenant A publishes
    [token], _, _ = mint_and_bundle(tenant_a, [request(tenant_a.trust_domain, "/w")])
    document = tenant_a.client.get("/api/v1/bundle").json()

    # when an independent JWT library validates it with the jwt-svid key named by its kid
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [k for k in document["keys"] if k["use"] == "jwt-svid" and k["kid"] == kid]
    key = jwt.PyJWK(jwk, algorithm="ES256")
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="svc")

    # then the signature and claims check out
    assert claims["sub"] == f"spiffe://{tenant_a.trust_domain}/w"


def test_jwt_svid_of_one_tenant_does_not_verify_with_another_tenants_bundle(tenant_a, tenant_b):
    # given a JWT-SVID minted by tenant A, and tenant B's bundle
    [token], _, _ = mint_and_bundle(tenant_a, [request(tenant_a.trust_domain, "/w")])
    with tenant_b.schema():
        bundle_b = services.current_bundle()

    # when it is validated with B's bundle (for its own trust domain, or posing as A's)
    # then it is rejected: B's bundle holds no key with A's kid
    with pytest.raises(JwtSvidError) as raised:
        verify_jwt_svid(
            token, audience="svc", bundles={TrustDomain(tenant_b.trust_domain): bundle_b}
        )
    assert raised.value.code == "jwt_untrusted_domain"
    with pytest.raises(JwtSvidError) as raised:
        verify_jwt_svid(
            token, audience="svc", bundles={TrustDomain(tenant_a.trust_domain): bundle_b}
        )
    assert raised.value.code == "jwt_unknown_kid"


def test_minting_for_an_id_outside_the_trust_domain_is_refused(tenant_a, tenant_b):
    # given a request for a SPIFFE ID in tenant B's trust domain
    stolen = request(tenant_b.trust_domain, "/stolen")

    # when tenant A is asked to mint it; then it refuses with a stable code
    with tenant_a.schema(), pytest.raises(InvalidSvid) as raised:
        services.mint_jwt_svids([request(tenant_a.trust_domain, "/mine"), stolen])
    assert raised.value.code == "spiffe_id_outside_trust_domain"


def test_jwt_svid_never_outlives_its_signing_key(tenant_a):
    # given an active JWT key with 60 s left
    with tenant_a.schema():
        not_after = utcnow().replace(microsecond=0) + dt.timedelta(seconds=60)
        JwtAuthority.objects.filter(status="active").update(not_after=not_after)

        # when a JWT-SVID with a one-hour TTL is minted
        [token] = services.mint_jwt_svids([request(tenant_a.trust_domain, "/w", ttl=3600)])

    # then its exp is the key's not_after at the latest
    _, claims = segments(token)
    assert claims["exp"] <= not_after.timestamp()
    assert claims["exp"] > claims["iat"]


def test_jwt_svid_ttl_is_kept_when_the_key_outlives_it():
    # given a key valid for another hour; when a 5-minute TTL is clamped; then it is kept
    now = dt.datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=dt.UTC)
    not_after = now + dt.timedelta(hours=1)
    assert services.jwt_svid_ttl(dt.timedelta(minutes=5), not_after=not_after, now=now) == (
        dt.timedelta(minutes=5)
    )
    # and a longer TTL is cut to whole seconds left before not_after (iat is floored)
    clamped = services.jwt_svid_ttl(dt.timedelta(hours=2), not_after=not_after, now=now)
    assert int(now.timestamp()) + clamped.total_seconds() <= not_after.timestamp()


def test_minting_for_a_trust_domain_without_jwt_keys_creates_the_key_first(tenant_a):
    # given a trust domain provisioned before JWT keys existed
    with tenant_a.schema():
        JwtAuthority.objects.all().delete()

    # when a JWT-SVID is minted
    tokens, bundle, authority = mint_and_bundle(tenant_a, [request(tenant_a.trust_domain, "/w")])

    # then it is signed by the newly created key, which the bundle publishes
    assert segments(tokens[0])[0]["kid"] == authority.key_id
    td = TrustDomain(tenant_a.trust_domain)
    assert verify_jwt_svid(tokens[0], audience="svc", bundles={td: bundle})


def test_minting_with_key_manager_unreachable_raises_key_manager_unavailable(
    tenant_a, vault_unreachable
):
    # given the key manager down; when a JWT-SVID is minted
    with tenant_a.schema(), pytest.raises(KeyManagerUnavailable) as raised:
        services.mint_jwt_svids([request(tenant_a.trust_domain, "/w")])

    # then the named error says so (HTTP 503 / gRPC UNAVAILABLE at the boundaries)
    assert raised.value.code == "key_manager_unavailable"
    assert raised.value.http_status == 503


def test_minting_an_empty_batch_answers_nothing_without_calling_the_key_manager(
    tenant_a, vault_unreachable
):
    # given the key manager down; when no JWT-SVID is asked for; then none is minted, no error
    with tenant_a.schema():
        assert services.mint_jwt_svids([]) == []


def test_minting_rejects_a_request_without_audience(tenant_a):
    # given a request with an empty audience; when minted; then JWT-SVID.md 3.2 refuses it
    with tenant_a.schema(), pytest.raises(JwtSvidError) as raised:
        services.mint_jwt_svids([request(tenant_a.trust_domain, "/w", audience=())])
    assert raised.value.code == "jwt_invalid_request"
