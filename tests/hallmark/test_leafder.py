"""LeafTemplate makes exactly the TBS certificate that CertificateBuilder makes of a leaf.

Minting builds leaves from DER pieces for speed; the certificate must not change by a byte.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from hallmark.errors import InvalidSvid
from hallmark.leafder import LeafTemplate
from hallmark.signing import LocalSigner
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import (
    _THROWAWAY_KEY,
    BACKDATE,
    LeafRequest,
    _subject,
    build_leaves,
    build_signing_certificate,
    utcnow,
    verify_x509_svid,
)

TD = TrustDomain("leafder.test")


def _leaf_builder(  # the reference: every leaf field through CertificateBuilder
    request: LeafRequest, ca: x509.Certificate, now: dt.datetime
) -> x509.CertificateBuilder:
    if not request.spiffe_id.path:
        raise InvalidSvid("a leaf X.509-SVID needs a SPIFFE ID with a non-root path")
    not_before = now - BACKDATE
    not_after = min(now + request.ttl, ca.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(request.spiffe_id))]
    sans += [x509.DNSName(name) for name in request.dns_names]
    common_name = request.dns_names[0] if request.dns_names else None
    return (
        x509.CertificateBuilder()
        .subject_name(_subject(request.spiffe_id.trust_domain, common_name))
        .issuer_name(ca.subject)
        .public_key(request.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(request.public_key), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )


def _ca(days: int):
    signer = LocalSigner.generate()
    now = utcnow()
    ca = build_signing_certificate(
        trust_domain=TD,
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now,
        not_after=now + dt.timedelta(days=days),
    )
    return ca, signer


@pytest.mark.parametrize("ca_days", [1, 30_000])  # leaf capped by the CA; times past 2049
@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
@pytest.mark.parametrize("dns_names", [(), ("web.example",), ("web.example", "alt.example")])
@pytest.mark.parametrize("ttl", [3600, 10**10])
def test_template_tbs_is_byte_for_byte_the_builders(ca_days, curve, dns_names, ttl):
    # given a CA and a leaf request
    ca, _ = _ca(ca_days)
    now = utcnow()
    request = LeafRequest(
        SpiffeId.parse(f"spiffe://{TD.name}/w/1"),
        ec.generate_private_key(curve).public_key(),
        dt.timedelta(seconds=ttl),
        dns_names,
    )
    expected = _leaf_builder(request, ca, now).sign(_THROWAWAY_KEY, hashes.SHA256())

    # when the template encodes the same leaf (same serial)
    tbs = LeafTemplate(ca, now, BACKDATE).tbs(
        subject=_subject(TD, dns_names[0] if dns_names else None).public_bytes(),
        public_key=request.public_key,
        spiffe_id=str(request.spiffe_id),
        dns_names=dns_names,
        ttl=request.ttl,
        serial=expected.serial_number,
    )

    # then the bytes are the builder's
    assert tbs == expected.tbs_certificate_bytes


def test_built_leaves_verify_and_get_distinct_serials():
    ca, signer = _ca(1)
    requests = [
        LeafRequest(
            SpiffeId.parse(f"spiffe://{TD.name}/w/{i}"),
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            dt.timedelta(hours=1),
        )
        for i in range(50)
    ]
    leaves = build_leaves(requests, ca=ca, signer=signer)
    assert [str(verify_x509_svid([leaf], [ca])) for leaf in leaves] == [
        str(r.spiffe_id) for r in requests
    ]
    assert len({leaf.serial_number for leaf in leaves}) == 50
    assert all(0 < leaf.serial_number < 2**159 for leaf in leaves)
