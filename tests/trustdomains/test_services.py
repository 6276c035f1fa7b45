"""Trust domain services: the CA in OpenBao, bundles, and batch SVID signing."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import connection
from django.test import override_settings

from hallmark.errors import InvalidSvid
from hallmark.signing import LocalSigner
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import (
    LeafRequest,
    build_signing_certificate,
    spiffe_id_of,
    utcnow,
    verify_x509_svid,
)
from tenants.models import AuditEvent
from trustdomains import services
from trustdomains.keymanagers import KeyManagerUnavailable, get_key_manager, reset_key_managers
from trustdomains.models import JwtAuthority, X509Authority

pytestmark = pytest.mark.django_db(transaction=True)


def leaf_request(trust_domain: str, path: str, ttl: int = 600) -> LeafRequest:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return LeafRequest(
        SpiffeId.parse(f"spiffe://{trust_domain}{path}"), key, dt.timedelta(seconds=ttl)
    )


def test_provisioned_ca_conforms_to_x509_svid_signing_certificate_rules(tenant_a):
    # given a signed-up tenant
    with tenant_a.schema():
        # when its active X.509 authority is read
        authority = X509Authority.objects.get(status="active")
        ca = authority.certificate

    # then the CA is a self-signed SPIFFE signing certificate for spiffe://<td>
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign
    assert not usage.value.digital_signature
    uris = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{tenant_a.trust_domain}"
    ]
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert lifetime == dt.timedelta(seconds=settings.CA_TTL_SECONDS + 10)  # backdated 10 s
    assert authority.not_after == ca.not_valid_after_utc


def test_ca_public_key_is_the_transit_keys_public_key(tenant_a):
    # given the tenant's active authority
    with tenant_a.schema():
        authority = X509Authority.objects.get(status="active")

    # when the key manager is asked for the key's public half
    public_key = get_key_manager(authority.key_manager).signer(authority.key_ref).public_key()

    # then it is the key in the CA certificate
    assert public_key.public_numbers() == authority.certificate.public_key().public_numbers()


def test_database_holds_no_private_key_material(tenant_a):
    # given a signed-up tenant; when every value of its trust domain tables is read raw
    with tenant_a.schema(), connection.cursor() as cursor:
        values: list[object] = []
        for table in (
            "trustdomains_trustdomain",
            "trustdomains_x509authority",
            "trustdomains_jwtauthority",
        ):
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            for row in cursor.fetchall():
                values.extend(row)

    # then nothing in them is, or contains, a private key
    for value in values:
        raw = bytes(value) if isinstance(value, memoryview | bytes) else str(value).encode()
        assert b"PRIVATE KEY" not in raw
        with pytest.raises(ValueError):
            serialization.load_der_private_key(raw, password=None)
    with tenant_a.schema():
        authority = X509Authority.objects.get()
        jwt_authority = JwtAuthority.objects.get()
    assert authority.key_ref.startswith(f"hallmark-{tenant_a.tenant.id.hex}-x509-")
    assert jwt_authority.key_ref.startswith(f"hallmark-{tenant_a.tenant.id.hex}-jwt-")
    assert jwt_authority.public_key.public_numbers()  # the DER is a public key


def test_provisioning_is_audited(tenant_a):
    # given a signed-up tenant; when its audit trail is read
    events = AuditEvent.objects.filter(tenant=tenant_a.tenant, action="trust_domain.provision")

    # then the trust domain's provisioning is there with the authority it created
    assert events.count() == 1
    assert events.get().target == tenant_a.trust_domain


def test_current_bundle_holds_the_active_ca_with_the_trust_domains_sequence(tenant_a):
    # given a signed-up tenant
    with tenant_a.schema():
        # when its current bundle is built
        bundle = services.current_bundle()
        trust_domain = services.get_trust_domain()
        ca = X509Authority.objects.get(status="active").certificate

    # then it holds exactly the active CA and the trust domain's sequence
    assert bundle.trust_domain == TrustDomain(tenant_a.trust_domain)
    assert list(bundle.x509_authorities) == [ca]
    assert bundle.sequence == trust_domain.bundle_sequence
    assert bundle.refresh_hint == 300


def test_bundle_leaves_out_pruned_and_revoked_authorities(tenant_a):
    # given an active authority plus a pruned and a revoked one
    with tenant_a.schema():
        active = X509Authority.objects.get(status="active")
        for key_ref, changes in (
            ("hallmark-x-pruned", {"pruned_at": utcnow(), "not_after": utcnow()}),
            ("hallmark-x-revoked", {"revoked": True}),
        ):
            X509Authority.objects.create(
                trust_domain=active.trust_domain,
                status="old",
                key_manager=active.key_manager,
                key_ref=key_ref,
                certificate_der=active.certificate_der,
                not_before=active.not_before,
                not_after=changes.get("not_after", active.not_after),
                revoked=changes.get("revoked", False),
                pruned_at=changes.get("pruned_at"),
            )

        # when the bundle is built
        bundle = services.current_bundle()

    # then only the active authority is published
    assert list(bundle.x509_authorities) == [active.certificate]


def test_an_expired_authority_stays_in_the_bundle_until_it_is_pruned(tenant_a):
    # given an old authority that expired a minute ago and was not pruned yet
    with tenant_a.schema():
        active = X509Authority.objects.get(status="active")
        signer = LocalSigner.generate()
        expired_ca = build_signing_certificate(
            trust_domain=TrustDomain(tenant_a.trust_domain),
            subject_key=signer.public_key(),
            signer=signer,
            not_before=utcnow() - dt.timedelta(hours=2),
            not_after=utcnow() - dt.timedelta(minutes=1),
        )
        X509Authority.objects.create(
            trust_domain=active.trust_domain,
            status="old",
            key_manager=active.key_manager,
            key_ref="hallmark-x-expired",
            certificate_der=expired_ca.public_bytes(serialization.Encoding.DER),
            not_before=expired_ca.not_valid_before_utc,
            not_after=expired_ca.not_valid_after_utc,
        )

        # when the bundle is built from the journal
        bundle, _ = services.build_bundle()

    # then it is still published: the bundle changes only with a sequence bump (pruning)
    assert bundle.x509_authorities == (expired_ca, active.certificate)  # oldest first


def test_signed_svid_chains_verify_against_the_current_bundle(tenant_a):
    # given several leaf requests in the tenant's trust domain
    requests = [leaf_request(tenant_a.trust_domain, f"/workload/{i}") for i in range(5)]
    requests.append(
        LeafRequest(
            SpiffeId.parse(f"spiffe://{tenant_a.trust_domain}/spire/server"),
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            dt.timedelta(hours=1),
            dns_names=(tenant_a.trust_domain,),
        )
    )
    with tenant_a.schema():
        # when they are signed in one batch
        chains = services.sign_x509_svids(requests)
        bundle = services.current_bundle()

    # then each chain is leaf-first, verifies against the bundle and names the requested ID
    assert len(chains) == len(requests)
    for chain, request in zip(chains, requests, strict=True):
        assert verify_x509_svid(chain, bundle.x509_authorities) == request.spiffe_id
        assert spiffe_id_of(chain[0]) == request.spiffe_id
        assert chain[0].public_key().public_numbers() == request.public_key.public_numbers()
        assert chain[0].not_valid_after_utc <= bundle.x509_authorities[0].not_valid_after_utc
    server = chains[-1][0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert server.get_values_for_type(x509.DNSName) == [tenant_a.trust_domain]


def test_svid_of_one_tenant_does_not_verify_against_another_tenants_bundle(tenant_a, tenant_b):
    # given an SVID signed by tenant A and the bundles of both tenants
    with tenant_a.schema():
        chain = services.sign_x509_svids([leaf_request(tenant_a.trust_domain, "/w")])[0]
        bundle_a = services.current_bundle()
    with tenant_b.schema():
        bundle_b = services.current_bundle()

    # then the bundles differ and A's SVID does not verify against B's
    assert bundle_a.x509_authorities != bundle_b.x509_authorities
    with pytest.raises(InvalidSvid):
        verify_x509_svid(chain, bundle_b.x509_authorities)


def test_signing_an_id_outside_the_trust_domain_is_refused(tenant_a, tenant_b):
    # given a request for a SPIFFE ID in tenant B's trust domain
    request = leaf_request(tenant_b.trust_domain, "/stolen")

    # when tenant A is asked to sign it; then it refuses with a stable code
    with tenant_a.schema(), pytest.raises(InvalidSvid) as raised:
        services.sign_x509_svids([request])
    assert raised.value.code == "spiffe_id_outside_trust_domain"


def test_signing_with_vault_unreachable_raises_key_manager_unavailable(tenant_a):
    # given the platform's key manager pointed at a closed port
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        with override_settings(VAULT_ADDR=f"http://127.0.0.1:{port}"):
            reset_key_managers()
            # when an SVID is signed; then the named error says the key manager is down
            with tenant_a.schema(), pytest.raises(KeyManagerUnavailable) as raised:
                services.sign_x509_svids([leaf_request(tenant_a.trust_domain, "/w")])
    finally:
        reset_key_managers()
    assert raised.value.code == "key_manager_unavailable"


def test_discard_key_material_destroys_the_tenants_keys(tenant_a):
    # given a tenant whose CA key is in OpenBao
    import hvac
    import hvac.exceptions

    with tenant_a.schema():
        key_refs = [X509Authority.objects.get().key_ref, JwtAuthority.objects.get().key_ref]

    # when its key material is discarded (as after a failed signup)
    services.discard_key_material(tenant=tenant_a.tenant)

    # then the CA and JWT keys are gone from OpenBao
    client = hvac.Client(url=settings.VAULT_ADDR, token=settings.VAULT_TOKEN)
    for key_ref in key_refs:
        with pytest.raises(hvac.exceptions.InvalidPath):
            client.secrets.transit.read_key(key_ref)


def test_a_tenant_cannot_be_provisioned_a_second_trust_domain(tenant_a):
    # given a tenant with its trust domain; when another is provisioned in its schema
    with tenant_a.schema(), pytest.raises(services.TrustDomainExists) as raised:
        services.provision_trust_domain(tenant=tenant_a.tenant, name="second.test")

    # then it is refused before any key is made, and the first one is untouched
    assert raised.value.code == "trust_domain_exists"
    with tenant_a.schema():
        assert services.get_trust_domain().name == tenant_a.trust_domain
        assert X509Authority.objects.count() == 1
