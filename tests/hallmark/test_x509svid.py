"""X.509-SVIDs and signing certificates conform to X509-SVID.md."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from hallmark.errors import InvalidSvid
from hallmark.signing import LocalSigner
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import (
    LeafRequest,
    build_leaf,
    build_leaves,
    build_signing_certificate,
    make_csr,
    public_key_from_csr,
    spiffe_id_of,
    utcnow,
    verify_x509_svid,
)

TD = TrustDomain("example.org")


def _ca(trust_domain: TrustDomain = TD, hours: int = 24) -> tuple[x509.Certificate, LocalSigner]:
    signer = LocalSigner.generate()
    now = utcnow()
    ca = build_signing_certificate(
        trust_domain=trust_domain,
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now - dt.timedelta(seconds=10),
        not_after=now + dt.timedelta(hours=hours),
    )
    return ca, signer


def _leaf(
    ca: x509.Certificate, signer: LocalSigner, path: str = "/w", ttl: int = 3600
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return build_leaf(
        LeafRequest(
            TD.spiffe_id(path), key.public_key(), dt.timedelta(seconds=ttl), ("w.example.org",)
        ),
        ca=ca,
        signer=signer,
    )


def test_signing_certificate_is_a_ca_with_keycertsign_and_the_trust_domain_id() -> None:
    ca, _ = _ca()
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert constraints.value.ca is True
    assert usage.critical is True and usage.value.key_cert_sign is True
    assert str(spiffe_id_of(ca)) == "spiffe://example.org"  # no path on a signing certificate
    ca.verify_directly_issued_by(ca)


def test_leaf_has_exactly_one_uri_san_and_leaf_key_usage() -> None:
    ca, signer = _ca()
    leaf = _leaf(ca, signer)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/w"]
    assert san.get_values_for_type(x509.DNSName) == ["w.example.org"]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    leaf.verify_directly_issued_by(ca)


def test_leaf_validity_never_outlives_its_ca() -> None:
    ca, signer = _ca(hours=1)
    leaf = _leaf(ca, signer, ttl=7200)
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc


def test_batch_leaves_have_distinct_serials_and_verify() -> None:
    ca, signer = _ca()
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(20)]
    leaves = build_leaves(
        [
            LeafRequest(TD.spiffe_id(f"/w{i}"), k.public_key(), dt.timedelta(hours=1))
            for i, k in enumerate(keys)
        ],
        ca=ca,
        signer=signer,
    )
    assert len({leaf.serial_number for leaf in leaves}) == 20
    for i, leaf in enumerate(leaves):
        assert str(verify_x509_svid([leaf], [ca])) == f"spiffe://example.org/w{i}"


def test_leaf_for_the_trust_domain_root_id_is_refused() -> None:
    ca, signer = _ca()
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidSvid):
        build_leaf(
            LeafRequest(TD.id, key.public_key(), dt.timedelta(hours=1)), ca=ca, signer=signer
        )


def test_svid_of_another_trust_domain_ca_does_not_verify() -> None:
    ca, signer = _ca()
    other_ca, _ = _ca(TrustDomain("other.org"))
    with pytest.raises(InvalidSvid):
        verify_x509_svid([_leaf(ca, signer)], [other_ca])


def test_expired_svid_does_not_verify() -> None:
    ca, signer = _ca()
    leaf = _leaf(ca, signer, ttl=60)
    with pytest.raises(InvalidSvid):
        verify_x509_svid([leaf], [ca], at=utcnow() + dt.timedelta(minutes=5))


def test_ca_certificate_is_refused_as_a_leaf() -> None:
    ca, _ = _ca()
    with pytest.raises(InvalidSvid):
        verify_x509_svid([ca], [ca])


def test_csr_gives_only_its_key_and_a_tampered_csr_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key)
    assert public_key_from_csr(csr).public_numbers() == key.public_key().public_numbers()
    tampered = bytearray(csr)
    tampered[-5] ^= 0xFF
    with pytest.raises(InvalidSvid):
        public_key_from_csr(bytes(tampered))
    with pytest.raises(InvalidSvid):
        public_key_from_csr(b"not a csr")


def test_svid_with_two_uri_sans_is_rejected() -> None:
    from cryptography.hazmat.primitives import hashes

    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    name = x509.Name([])
    two = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "x")]))
        .issuer_name(name)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("spiffe://example.org/a"),
                    x509.UniformResourceIdentifier("spiffe://example.org/b"),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(InvalidSvid, match="exactly one"):
        spiffe_id_of(two)
    ca, _ = _ca()
    with pytest.raises(InvalidSvid):
        verify_x509_svid([two], [ca])


def test_svid_is_untrusted_when_the_bundle_has_no_x509_authorities() -> None:
    ca, signer = _ca()
    with pytest.raises(InvalidSvid, match="no X.509 authorities"):
        verify_x509_svid([_leaf(ca, signer)], [])
