"""Trust domains provisioned on each key-manager backend sign SVIDs that verify."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.errors import InvalidSvid
from hallmark.jwtsvid import JwtSvidError, JwtSvidRequest, verify_jwt_svid
from hallmark.signing import sha256
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import LeafRequest, verify_x509_svid
from tests.conftest import make_tenant
from trustdomains import services
from trustdomains.keymanagers import KeyManagerUnavailable, get_key_manager, reset_key_managers
from trustdomains.keymanagers.pkcs11 import Pkcs11KeyManager, load_pin_secret
from trustdomains.models import JwtAuthority, X509Authority
from trustdomains.models import TrustDomain as TrustDomainRow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tenant(default_key_manager):
    """A tenant signed up while `backend` is the platform's default key manager."""
    return make_tenant("k")


def leaf_requests(trust_domain: str, count: int) -> list[LeafRequest]:
    return [
        LeafRequest(
            SpiffeId.parse(f"spiffe://{trust_domain}/workload/{i}"),
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            dt.timedelta(minutes=10),
        )
        for i in range(count)
    ]


def jwt_requests(trust_domain: str, count: int) -> list[JwtSvidRequest]:
    return [
        JwtSvidRequest(
            SpiffeId.parse(f"spiffe://{trust_domain}/workload/{i}"),
            ["svc"],
            dt.timedelta(minutes=5),
        )
        for i in range(count)
    ]


def test_provisioned_trust_domain_keeps_its_keys_in_the_chosen_backend(backend, tenant):
    # given a tenant signed up with `backend` as the default
    with tenant.schema():
        trust_domain = TrustDomainRow.objects.get()
        x509_authority = X509Authority.objects.get()
        jwt_authority = JwtAuthority.objects.get()

    # then the trust domain and both authorities name the backend
    assert trust_domain.key_manager == backend
    assert x509_authority.key_manager == jwt_authority.key_manager == backend
    # and the backend holds the keys whose public halves the database publishes
    manager = get_key_manager(backend)
    ca_key = x509_authority.certificate.public_key()
    assert manager.signer(x509_authority.key_ref).public_key().public_numbers() == (
        ca_key.public_numbers()
    )
    assert manager.signer(jwt_authority.key_ref).public_key().public_numbers() == (
        jwt_authority.public_key.public_numbers()
    )


def test_x509_svids_signed_through_the_backend_verify_against_the_bundle(tenant):
    # given leaf requests in the tenant's trust domain
    requests = leaf_requests(tenant.trust_domain, 20)

    # when they are signed in one batch
    with tenant.schema():
        chains = services.sign_x509_svids(requests)
        bundle = services.current_bundle()

    # then every chain verifies against the tenant's bundle and names its SPIFFE ID
    assert len(chains) == len(requests)
    for chain, request in zip(chains, requests, strict=True):
        assert verify_x509_svid(chain, bundle.x509_authorities) == request.spiffe_id


def test_jwt_svids_minted_through_the_backend_verify_against_the_bundle(tenant):
    # given JWT-SVID requests in the tenant's trust domain
    requests = jwt_requests(tenant.trust_domain, 20)

    # when they are minted in one batch
    with tenant.schema():
        tokens = services.mint_jwt_svids(requests)
        bundle = services.current_bundle()

    # then each verifies against the tenant's bundle for its audience
    td = TrustDomain(tenant.trust_domain)
    for token, request in zip(tokens, requests, strict=True):
        svid = verify_jwt_svid(token, audience="svc", bundles={td: bundle})
        assert svid.spiffe_id == request.spiffe_id


def test_trust_domain_endpoint_names_the_backend(backend, tenant):
    # when the tenant reads its trust domain; then the key manager is the backend
    response = tenant.client.get("/api/v1/trust-domain")
    assert response.status_code == 200
    assert response.json()["key_manager"] == backend


def test_discarded_key_material_can_no_longer_sign(backend, tenant):
    # given a tenant's key references
    with tenant.schema():
        refs = [X509Authority.objects.get().key_ref, JwtAuthority.objects.get().key_ref]

    # when its key material is discarded (compensation for a failed signup)
    services.discard_key_material(tenant=tenant.tenant)

    # then neither key signs any more
    for key_ref in refs:
        with pytest.raises(KeyManagerUnavailable):
            get_key_manager(backend).signer(key_ref).sign_digest(sha256(b"x"))


def test_trust_domain_keeps_signing_with_its_backend_after_the_default_changes(settings):
    # given a tenant provisioned on PKCS#11
    settings.DEFAULT_KEY_MANAGER = "pkcs11"
    tenant = make_tenant("p")

    # when the platform default switches to Vault
    settings.DEFAULT_KEY_MANAGER = "vault"

    # then the tenant still signs with the key on its token, and SVIDs verify
    requests = leaf_requests(tenant.trust_domain, 2)
    with tenant.schema():
        chains = services.sign_x509_svids(requests)
        tokens = services.mint_jwt_svids(jwt_requests(tenant.trust_domain, 1))
        bundle = services.current_bundle()
    for chain in chains:
        verify_x509_svid(chain, bundle.x509_authorities)
    verify_jwt_svid(tokens[0], audience="svc", bundles={TrustDomain(tenant.trust_domain): bundle})


def test_tenants_on_different_backends_do_not_verify_each_others_svids(settings):
    # given one tenant on each backend
    settings.DEFAULT_KEY_MANAGER = "vault"
    on_vault = make_tenant("v")
    settings.DEFAULT_KEY_MANAGER = "pkcs11"
    on_pkcs11 = make_tenant("p")

    # when each signs an X.509-SVID and a JWT-SVID
    signed = {}
    for handle in (on_vault, on_pkcs11):
        with handle.schema():
            chain = services.sign_x509_svids(leaf_requests(handle.trust_domain, 1))[0]
            token = services.mint_jwt_svids(jwt_requests(handle.trust_domain, 1))[0]
            signed[handle.trust_domain] = (chain, token, services.current_bundle())

    # then neither tenant's SVIDs verify against the other's bundle
    (td_v, (chain_v, token_v, bundle_v)), (td_p, (chain_p, token_p, bundle_p)) = signed.items()
    with pytest.raises(InvalidSvid):
        verify_x509_svid(chain_v, bundle_p.x509_authorities)
    with pytest.raises(InvalidSvid):
        verify_x509_svid(chain_p, bundle_v.x509_authorities)
    foreign = {TrustDomain(td_v): bundle_p, TrustDomain(td_p): bundle_v}
    for token in (token_v, token_p):
        with pytest.raises(JwtSvidError):
            verify_jwt_svid(token, audience="svc", bundles=foreign)


def test_signing_fails_with_a_named_error_while_the_hsm_module_is_missing_and_resumes(
    settings, tmp_path
):
    # given a tenant on PKCS#11, served through a module file that then disappears
    settings.DEFAULT_KEY_MANAGER = "pkcs11"
    tenant = make_tenant("h")
    real_module, module = settings.PKCS11_MODULE, tmp_path / "libsofthsm2.so"
    settings.PKCS11_MODULE = str(module)
    reset_key_managers()
    try:
        # when an SVID is signed; then the named error says to check the module
        with tenant.schema(), pytest.raises(KeyManagerUnavailable) as raised:
            services.sign_x509_svids(leaf_requests(tenant.trust_domain, 1))
        assert raised.value.code == "key_manager_unavailable"
        assert "HALLMARK_PKCS11_MODULE" in raised.value.detail

        # when the module is back; then the same process signs again, nothing restarted
        shutil.copy(real_module, module)
        with tenant.schema():
            chain = services.sign_x509_svids(leaf_requests(tenant.trust_domain, 1))[0]
            bundle = services.current_bundle()
        verify_x509_svid(chain, bundle.x509_authorities)
    finally:
        reset_key_managers()


def test_a_key_manager_with_the_wrong_pin_secret_cannot_sign_for_the_tenant(settings):
    # given a tenant on PKCS#11 and the platform's real secret
    settings.DEFAULT_KEY_MANAGER = "pkcs11"
    tenant = make_tenant("s")
    with tenant.schema():
        key_ref = X509Authority.objects.get().key_ref
    real = load_pin_secret(
        settings.PKCS11_PIN_SECRET, settings.PKCS11_PIN_SECRET_FILE, generate=False
    )

    # when a manager with another secret tries to sign; then the token refuses
    impostor = Pkcs11KeyManager(module=settings.PKCS11_MODULE, pin_secret=real + b"x")
    with pytest.raises(KeyManagerUnavailable) as raised:
        impostor.signer(key_ref).sign_digest(sha256(b"x"))
    assert raised.value.code == "key_access_denied"
