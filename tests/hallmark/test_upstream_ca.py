"""A CA key's CSR built through a Signer, and the checks on an upstream-signed CA certificate."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from hallmark.errors import InvalidSvid
from hallmark.signing import LocalSigner
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import (
    build_signing_certificate,
    check_upstream_signed_ca,
    signing_certificate_csr,
    utcnow,
)

TD = TrustDomain("example.org")


def _root() -> tuple[x509.Certificate, LocalSigner]:
    signer = LocalSigner.generate()
    now = utcnow()
    root = build_signing_certificate(
        trust_domain=TrustDomain("upstream.example"),
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=30),
    )
    return root, signer


def _intermediate(
    root: x509.Certificate, root_signer: LocalSigner, *, trust_domain: TrustDomain = TD
) -> tuple[x509.Certificate, LocalSigner]:
    signer = LocalSigner.generate()
    now = utcnow()
    ca = build_signing_certificate(
        trust_domain=trust_domain,
        subject_key=signer.public_key(),
        signer=root_signer,
        not_before=now - dt.timedelta(seconds=10),
        not_after=now + dt.timedelta(days=1),
        issuer=root,
    )
    return ca, signer


def test_ca_csr_is_signed_by_the_key_and_names_the_trust_domain() -> None:
    # given a CA key behind a Signer (a key manager in production)
    signer = LocalSigner.generate()

    # when its CSR is built
    csr = x509.load_der_x509_csr(signing_certificate_csr(TD, signer))

    # then the CSR carries that key, verifies, and is a standard PKCS#10 request
    assert csr.is_signature_valid
    assert csr.public_key() == signer.public_key()
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    assert "example.org" in csr.subject.rfc4514_string()
    assert csr.public_bytes(serialization.Encoding.PEM).startswith(b"-----BEGIN CERTIFICATE REQ")


def test_an_upstream_signed_ca_for_our_key_and_trust_domain_passes() -> None:
    root, root_signer = _root()
    ca, signer = _intermediate(root, root_signer)
    check_upstream_signed_ca(ca, [root], trust_domain=TD, public_key=signer.public_key())


def test_an_upstream_ca_for_another_key_is_refused() -> None:
    root, root_signer = _root()
    ca, _ = _intermediate(root, root_signer)
    with pytest.raises(InvalidSvid, match="not for the CA key"):
        check_upstream_signed_ca(
            ca, [root], trust_domain=TD, public_key=LocalSigner.generate().public_key()
        )


def test_an_upstream_ca_naming_another_trust_domain_is_refused() -> None:
    root, root_signer = _root()
    ca, signer = _intermediate(root, root_signer, trust_domain=TrustDomain("other.org"))
    with pytest.raises(InvalidSvid, match="does not name spiffe://example.org"):
        check_upstream_signed_ca(ca, [root], trust_domain=TD, public_key=signer.public_key())


def test_an_upstream_chain_that_does_not_link_is_refused() -> None:
    root, root_signer = _root()
    ca, signer = _intermediate(root, root_signer)
    stranger, _ = _root()
    with pytest.raises(InvalidSvid, match="chain is broken"):
        check_upstream_signed_ca(ca, [stranger], trust_domain=TD, public_key=signer.public_key())
    with pytest.raises(InvalidSvid, match="no chain"):
        check_upstream_signed_ca(ca, [], trust_domain=TD, public_key=signer.public_key())


def test_an_upstream_ca_that_is_not_valid_now_is_refused() -> None:
    root, root_signer = _root()
    ca, signer = _intermediate(root, root_signer)
    later = utcnow() + dt.timedelta(days=2)
    with pytest.raises(InvalidSvid, match="not valid now"):
        check_upstream_signed_ca(
            ca, [root], trust_domain=TD, public_key=signer.public_key(), at=later
        )
