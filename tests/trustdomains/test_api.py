"""GET /api/v1/trust-domain and GET /api/v1/bundle, for two tenants."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509

from hallmark.bundle import Bundle
from hallmark.spiffeid import TrustDomain
from trustdomains.models import JwtAuthority, X509Authority

pytestmark = pytest.mark.django_db(transaction=True)


def active_ca(handle) -> x509.Certificate:
    with handle.schema():
        return X509Authority.objects.get(status="active").certificate


def test_trust_domain_endpoint_describes_the_callers_trust_domain(tenant_a):
    # when tenant A reads its trust domain
    response = tenant_a.client.get("/api/v1/trust-domain")

    # then it sees its name, key manager and the active CA's public certificate only
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == tenant_a.trust_domain
    assert body["status"] == "active"
    assert body["key_manager"] == "vault"
    assert [a["status"] for a in body["jwt_authorities"]] == ["active"]
    [authority] = body["x509_authorities"]
    assert set(authority) == {
        "id",
        "status",
        "tainted",
        "revoked",
        "not_before",
        "not_after",
        "certificate_pem",
        "upstream_authority",
        "upstream_chain_pem",
    }
    assert authority["status"] == "active" and authority["tainted"] is False
    assert authority["upstream_authority"] == "" and authority["upstream_chain_pem"] == ""
    assert body["upstream_authority"] == ""
    pem = x509.load_pem_x509_certificate(authority["certificate_pem"].encode())
    assert pem == active_ca(tenant_a)
    assert "key_ref" not in response.content.decode()


def test_bundle_endpoint_serves_the_spiffe_bundle_format(tenant_a):
    # when tenant A fetches its bundle
    response = tenant_a.client.get("/api/v1/bundle")

    # then it is a SPIFFE bundle: JWKS with sequence and refresh hint, one x509-svid key
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert isinstance(document["spiffe_sequence"], int) and document["spiffe_sequence"] >= 1
    assert document["spiffe_refresh_hint"] == 300
    [key] = [k for k in document["keys"] if k["use"] != "jwt-svid"]
    assert key["use"] == "x509-svid"
    assert "kid" not in key
    assert key["kty"] == "EC" and key["crv"] == "P-256"
    assert len(key["x5c"]) == 1
    assert x509.load_der_x509_certificate(base64.b64decode(key["x5c"][0])) == active_ca(tenant_a)
    parsed = Bundle.parse(TrustDomain(tenant_a.trust_domain), response.content)
    assert list(parsed.x509_authorities) == [active_ca(tenant_a)]


def test_bundle_endpoint_serves_pem_on_request(tenant_a):
    # when tenant A asks for its bundle as PEM
    response = tenant_a.client.get("/api/v1/bundle?format=pem")

    # then it gets the X.509 authorities as PEM text
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    assert x509.load_pem_x509_certificates(response.content) == [active_ca(tenant_a)]


def test_each_tenant_gets_only_its_own_bundle(tenant_a, tenant_b):
    # when each tenant fetches its bundle with its own token
    bundle_a = tenant_a.client.get("/api/v1/bundle").content
    bundle_b = tenant_b.client.get("/api/v1/bundle").content
    pem_b = tenant_b.client.get("/api/v1/bundle?format=pem").content

    # then the bundles differ and B's holds B's CA only
    assert bundle_a != bundle_b
    parsed_b = Bundle.parse(TrustDomain(tenant_b.trust_domain), bundle_b)
    assert list(parsed_b.x509_authorities) == [active_ca(tenant_b)]
    assert x509.load_pem_x509_certificates(pem_b) == [active_ca(tenant_b)]
    assert tenant_b.client.get("/api/v1/trust-domain").json()["name"] == tenant_b.trust_domain


@pytest.mark.parametrize(
    "path", ["/api/v1/bundle", "/api/v1/bundle?format=pem", "/api/v1/trust-domain"]
)
def test_trust_domain_endpoints_need_a_tenant_token(api, path):
    # when called without a token; then 401 with a stable JSON code
    response = api.get(path)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_signup_with_vault_unreachable_answers_503_and_leaves_no_tenant(api):
    # given the key manager pointed at a port where nothing listens
    import socket
    import uuid

    from django.test import override_settings

    from tenants.models import Tenant
    from trustdomains.keymanagers import reset_key_managers

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    trust_domain = f"down-{uuid.uuid4().hex[:8]}.test"
    try:
        with override_settings(VAULT_ADDR=f"http://127.0.0.1:{port}"):
            reset_key_managers()
            # when a tenant signs up
            response = api.post(
                "/api/v1/signup",
                {
                    "name": "Down",
                    "trust_domain": trust_domain,
                    "email": f"{trust_domain}@example.com",
                    "password": "correct horse battery staple",
                },
                format="json",
            )
    finally:
        reset_key_managers()

    # then the answer is 503 key_manager_unavailable, and no tenant was created
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "key_manager_unavailable"
    assert "HALLMARK_VAULT_ADDR" in response.json()["detail"]
    assert not Tenant.objects.filter(trust_domain=trust_domain).exists()


def test_trust_domain_endpoint_lists_jwt_authorities_with_public_jwk_only(tenant_a):
    # given tenant A's active JWT authority
    with tenant_a.schema():
        authority = JwtAuthority.objects.get(status="active")

    # when tenant A reads its trust domain
    response = tenant_a.client.get("/api/v1/trust-domain")

    # then the JWT authority is listed with its kid, journal state and public JWK, no key_ref
    [listed] = response.json()["jwt_authorities"]
    assert set(listed) == {
        "id",
        "key_id",
        "status",
        "tainted",
        "revoked",
        "not_before",
        "not_after",
        "public_key_jwk",
    }
    assert listed["id"] == str(authority.id) and listed["key_id"] == authority.key_id
    assert listed["status"] == "active" and listed["tainted"] is False
    jwk = listed["public_key_jwk"]
    assert set(jwk) == {"kty", "crv", "x", "y", "use", "kid"}
    assert (jwk["use"], jwk["kid"]) == ("jwt-svid", authority.key_id)
    assert "d" not in jwk
    assert authority.key_ref not in response.content.decode()


def test_bundle_json_publishes_jwt_keys_as_jwt_svid_md_section_6_says(tenant_a):
    # given tenant A's active JWT authority
    with tenant_a.schema():
        authority = JwtAuthority.objects.get(status="active")

    # when tenant A fetches its bundle JSON
    document = tenant_a.client.get("/api/v1/bundle").json()

    # then there is one JWK per JWT signing key: use jwt-svid, kid set, EC public key, no x5c
    [jwt_key] = [k for k in document["keys"] if k["use"] == "jwt-svid"]
    assert set(jwt_key) == {"kty", "crv", "x", "y", "use", "kid"}
    assert jwt_key["kid"] == authority.key_id
    assert (jwt_key["kty"], jwt_key["crv"]) == ("EC", "P-256")
    # and a SPIFFE consumer extracts exactly that key for JWT-SVID validation (6.2)
    parsed = Bundle.parse(TrustDomain(tenant_a.trust_domain), json.dumps(document))
    [published] = parsed.jwt_authorities
    assert published.key_id == authority.key_id
    assert published.public_key.public_numbers() == authority.public_key.public_numbers()
    # and PEM output stays X.509 only
    pem = tenant_a.client.get("/api/v1/bundle?format=pem").content
    assert x509.load_pem_x509_certificates(pem) == [active_ca(tenant_a)]


def test_each_tenants_bundle_holds_only_its_own_jwt_keys(tenant_a, tenant_b):
    # when each tenant fetches its bundle
    keys_a = tenant_a.client.get("/api/v1/bundle").json()["keys"]
    keys_b = tenant_b.client.get("/api/v1/bundle").json()["keys"]

    # then no JWT key (by kid or by public key) of one appears in the other's
    jwt_a = {(k["kid"], k["x"], k["y"]) for k in keys_a if k["use"] == "jwt-svid"}
    jwt_b = {(k["kid"], k["x"], k["y"]) for k in keys_b if k["use"] == "jwt-svid"}
    assert len(jwt_a) == len(jwt_b) == 1
    assert not {kid for kid, _, _ in jwt_a} & {kid for kid, _, _ in jwt_b}
    assert not {xy[1:] for xy in jwt_a} & {xy[1:] for xy in jwt_b}
