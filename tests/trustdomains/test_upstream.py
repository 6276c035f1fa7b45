"""Upstream authorities: trust domain CAs as intermediates of a real OpenBao PKI mount.

The embedded OpenBao carries the "embedded" upstream (config.embedded); other upstreams are
configured through HALLMARK_UPSTREAM_AUTHORITIES_FILE, here pointed at the same OpenBao with
other tokens, or at a closed port.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings as django_settings
from pkcs11 import Attribute

from hallmark.bundle import Bundle
from hallmark.errors import InvalidSvid
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import LeafRequest, spiffe_id_of, verify_x509_svid
from tenants.models import AuditEvent, Tenant
from tests.conftest import make_tenant
from tests.trustdomains.conftest import closed_port
from trustdomains import services, upstream
from trustdomains.keymanagers import get_key_manager
from trustdomains.keymanagers.pkcs11 import Pkcs11KeyManager
from trustdomains.models import X509Authority

pytestmark = pytest.mark.django_db(transaction=True)
X509 = "/api/v1/trust-domain/x509-authorities"


@pytest.fixture
def upstream_file(settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write an upstream authorities file; `configured()` re-reads it for the test."""

    def write(document: dict[str, object]) -> None:
        path = tmp_path / "upstreams.json"
        path.write_text(json.dumps(document))
        settings.UPSTREAM_AUTHORITIES_FILE = str(path)
        upstream.configured.cache_clear()

    yield write
    upstream.configured.cache_clear()


@pytest.fixture
def upstream_tenant(default_key_manager):  # type: ignore[no-untyped-def]
    return make_tenant("up", upstream_authority="embedded")


def upstream_root() -> x509.Certificate:
    answer = hvac.Client(url=django_settings.VAULT_ADDR, token=django_settings.VAULT_TOKEN).read(
        f"{django_settings.EMBEDDED_UPSTREAM_MOUNT}/cert/ca"
    )
    return x509.load_pem_x509_certificate(answer["data"]["certificate"].encode())


def bundle_of(handle) -> Bundle:
    response = handle.client.get("/api/v1/bundle")
    assert response.status_code == 200, response.content
    return Bundle.parse(TrustDomain(handle.trust_domain), response.content)


def sign(handle, path: str = "/workload") -> list[x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    request = LeafRequest(
        spiffe_id=TrustDomain(handle.trust_domain).spiffe_id(path),
        public_key=key.public_key(),
        ttl=dt.timedelta(minutes=5),
    )
    with handle.schema():
        return services.sign_x509_svids([request])[0]


def test_an_upstream_signed_trust_domain_publishes_the_upstream_root_and_chains_through_its_ca(
    upstream_tenant, backend
):
    # given a tenant that signed up with the embedded upstream authority (on each backend)
    root = upstream_root()
    with upstream_tenant.schema():
        authority = X509Authority.objects.get(status="active")
    ca = authority.certificate

    # then its CA is an intermediate issued by the upstream root, for its key in the key manager
    ca.verify_directly_issued_by(root)
    assert authority.key_manager == backend
    assert ca.public_key() == get_key_manager(backend).signer(authority.key_ref).public_key()
    assert spiffe_id_of(ca) == TrustDomain(upstream_tenant.trust_domain).id
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    # and the bundle publishes the upstream root, not the intermediate
    assert bundle_of(upstream_tenant).x509_authorities == (root,)
    # and an SVID's chain is leaf then CA, and verifies against that bundle
    chain = sign(upstream_tenant)
    assert chain[1] == ca and len(chain) == 2
    assert verify_x509_svid(chain, [root]) == TrustDomain(upstream_tenant.trust_domain).spiffe_id(
        "/workload"
    )
    # and the API shows who signed the CA, with the chain above it
    body = upstream_tenant.client.get("/api/v1/trust-domain").json()
    assert body["upstream_authority"] == "embedded"
    [listed] = body["x509_authorities"]
    assert listed["upstream_authority"] == "embedded"
    assert x509.load_pem_x509_certificates(listed["upstream_chain_pem"].encode()) == [root]


def test_a_self_signed_tenant_does_not_trust_an_upstream_tenants_svids(upstream_tenant, tenant_b):
    # given one tenant under the upstream and one self-signed
    chain = sign(upstream_tenant)
    b_bundle = bundle_of(tenant_b)

    # then B's bundle holds only B's own CA, and A's SVID does not verify against it
    assert upstream_root() not in b_bundle.x509_authorities
    with tenant_b.schema():
        assert b_bundle.x509_authorities == (
            X509Authority.objects.get(status="active").certificate,
        )
    with pytest.raises(InvalidSvid):
        verify_x509_svid(chain, b_bundle.x509_authorities)


def test_switching_to_an_upstream_applies_from_the_next_prepared_ca(tenant_a, tenant_b):
    # given a self-signed tenant
    first = bundle_of(tenant_a)

    # when it chooses the embedded upstream
    response = tenant_a.client.patch(
        "/api/v1/trust-domain", {"upstream_authority": "embedded"}, format="json"
    )

    # then the trust domain says so, the active CA is unchanged, and it is audited
    assert response.status_code == 200, response.content
    assert response.json()["upstream_authority"] == "embedded"
    assert bundle_of(tenant_a).x509_authorities == first.x509_authorities
    event = AuditEvent.objects.get(
        tenant=tenant_a.tenant, action="trust_domain.set_upstream_authority"
    )
    assert event.outcome == "success" and event.detail["upstream_authority"] == "embedded"
    # and tenant B is untouched
    assert tenant_b.client.get("/api/v1/trust-domain").json()["upstream_authority"] == ""

    # when a CA is prepared: the upstream root joins the bundle before the CA signs anything
    prepared = tenant_a.client.post(f"{X509}/prepare", format="json").json()
    assert prepared["upstream_authority"] == "embedded"
    assert set(bundle_of(tenant_a).x509_authorities) == {*first.x509_authorities, upstream_root()}
    assert len(sign(tenant_a)) == 1  # the old, self-signed CA still signs

    # when it is activated, SVIDs chain through the upstream-signed CA
    tenant_a.client.post(f"{X509}/{prepared['id']}/activate", format="json")
    chain = sign(tenant_a)
    assert len(chain) == 2
    verify_x509_svid(chain, bundle_of(tenant_a).x509_authorities)


def test_an_unknown_upstream_is_refused_with_the_names_that_exist(tenant_a, api):
    # when a tenant asks for an upstream that is not configured
    response = tenant_a.client.patch(
        "/api/v1/trust-domain", {"upstream_authority": "nope"}, format="json"
    )

    # then 400 with a stable code naming what it can choose, nothing changed, refusal audited
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_upstream_authority"
    assert "embedded" in response.json()["detail"]
    assert tenant_a.client.get("/api/v1/trust-domain").json()["upstream_authority"] == ""
    event = AuditEvent.objects.get(
        tenant=tenant_a.tenant, action="trust_domain.set_upstream_authority"
    )
    assert event.outcome == "denied"

    # and signup with it creates no tenant at all
    suffix = uuid.uuid4().hex[:8]
    signup = api.post(
        "/api/v1/signup",
        {
            "name": "Nope",
            "trust_domain": f"nope-{suffix}.test",
            "email": f"nope-{suffix}@example.com",
            "password": "correct horse battery staple",
            "upstream_authority": "nope",
        },
        format="json",
    )
    assert signup.status_code == 400 and signup.json()["code"] == "unknown_upstream_authority"
    assert not Tenant.objects.filter(trust_domain=f"nope-{suffix}.test").exists()


def test_an_upstream_limited_to_other_trust_domains_is_not_offered(tenant_a, upstream_file):
    # given an upstream that only serves *.corp.example
    upstream_file(
        {
            "corp": {
                "address": django_settings.VAULT_ADDR,
                "mount": django_settings.EMBEDDED_UPSTREAM_MOUNT,
                "token": django_settings.VAULT_TOKEN,
                "trust_domains": ["*.corp.example"],
            }
        }
    )

    # when a tenant outside it asks for it, then it is refused as unknown to it
    response = tenant_a.client.patch(
        "/api/v1/trust-domain", {"upstream_authority": "corp"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_upstream_authority"
    assert "corp" not in response.json()["detail"].split("choose one of:")[-1]


def tenant_keys(handle) -> set[str]:
    """The names of every key the tenant has in its trust domain's key manager."""
    with handle.schema():
        manager = get_key_manager(X509Authority.objects.first().key_manager)
    if isinstance(manager, Pkcs11KeyManager):
        with manager.session(handle.tenant.id) as pooled:
            return {o[Attribute.LABEL] for o in pooled.session.get_objects()}
    admin = hvac.Client(url=django_settings.VAULT_ADDR, token=django_settings.VAULT_TOKEN)
    names = admin.secrets.transit.list_keys(mount_point=django_settings.VAULT_TRANSIT_MOUNT)
    return {n for n in names["data"]["keys"] if n.startswith(f"hallmark-{handle.tenant.id.hex}-")}


@pytest.mark.parametrize(
    ("entry", "status", "code"),
    [
        ({"address": "closed", "token": "irrelevant"}, 503, "upstream_authority_unavailable"),
        ({"token": "not-a-real-token"}, 502, "upstream_authority_refused"),
        ({"mount": "no-such-pki"}, 502, "upstream_authority_refused"),
    ],
    ids=["unreachable", "bad-token", "no-mount"],
)
def test_an_upstream_that_cannot_sign_fails_the_prepare_and_stores_nothing(  # noqa: PLR0913
    default_key_manager, upstream_file, entry, status, code
):
    tenant_a = make_tenant("broken")
    # given a tenant whose upstream is unreachable, refuses its token, or has no such mount
    document = {
        "address": django_settings.VAULT_ADDR,
        "mount": django_settings.EMBEDDED_UPSTREAM_MOUNT,
        "token": django_settings.VAULT_TOKEN,
        "trust_domains": ["*"],
        **entry,
    }
    if document["address"] == "closed":
        document["address"] = f"http://127.0.0.1:{closed_port()}"
    upstream_file({"broken": document})
    assert (
        tenant_a.client.patch(
            "/api/v1/trust-domain", {"upstream_authority": "broken"}, format="json"
        ).status_code
        == 200
    )
    with tenant_a.schema():
        before = X509Authority.objects.count()
    published, keys = bundle_of(tenant_a), tenant_keys(tenant_a)

    # when a CA is prepared
    response = tenant_a.client.post(f"{X509}/prepare", format="json")

    # then a clear, named error; no authority row, the same bundle, and the new CA key that
    # could not be certified is gone from the key manager again
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert "broken" in response.json()["detail"]
    with tenant_a.schema():
        assert X509Authority.objects.count() == before
    assert bundle_of(tenant_a) == published
    assert tenant_keys(tenant_a) == keys


def test_an_upstream_signed_ca_is_tainted_but_not_revoked_here(upstream_tenant):
    # given an upstream-signed CA made old by a successor
    with upstream_tenant.schema():
        first = str(X509Authority.objects.get(status="active").id)
    prepared = upstream_tenant.client.post(f"{X509}/prepare", format="json").json()["id"]
    upstream_tenant.client.post(f"{X509}/{prepared}/activate", format="json")

    # when it is tainted, that works (agents replace what it signed)
    tainted = upstream_tenant.client.post(f"{X509}/{first}/taint", format="json")
    assert tainted.status_code == 200 and tainted.json()["tainted"] is True

    # but revoking it here is refused: the bundle holds the upstream root, not this CA
    revoked = upstream_tenant.client.post(f"{X509}/{first}/revoke", format="json")
    assert revoked.status_code == 409
    assert revoked.json()["code"] == "upstream_signed_authority"
    assert "revoke it at the upstream" in revoked.json()["detail"]
