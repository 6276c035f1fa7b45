"""Build and verify X.509-SVIDs and their signing certificates per X509-SVID.md.

Certificates are signed by a `Signer` whose private key never leaves its key manager:
the TBS certificate is produced by `cryptography` (signed once with a throwaway key so the
library fills in every field), then the TBS bytes are signed by the real key and the final
certificate is assembled in DER.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hallmark.der import certification_request_info, signed_certificate, signed_request
from hallmark.errors import InvalidSvid
from hallmark.leafder import LeafTemplate
from hallmark.signing import Signer, sha256
from hallmark.spiffeid import SpiffeId, TrustDomain

# SPIRE backdates certificates a little so that small clock skew does not reject them.
BACKDATE = dt.timedelta(seconds=10)
_THROWAWAY_KEY = ec.generate_private_key(ec.SECP256R1())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _finish(builder: x509.CertificateBuilder, signer: Signer) -> x509.Certificate:
    draft = builder.sign(_THROWAWAY_KEY, hashes.SHA256())
    tbs = draft.tbs_certificate_bytes
    signature = signer.sign_digest(sha256(tbs))
    return x509.load_der_x509_certificate(signed_certificate(tbs, signature))


def _subject(trust_domain: TrustDomain, common_name: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hallmark"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain.name[:64]),
    ]
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]))
    return x509.Name(attrs)


def build_signing_certificate(
    *,
    trust_domain: TrustDomain,
    subject_key: ec.EllipticCurvePublicKey,
    signer: Signer,
    not_before: dt.datetime,
    not_after: dt.datetime,
    issuer: x509.Certificate | None = None,
) -> x509.Certificate:
    """A CA (signing) certificate for the trust domain: self-signed when `issuer` is None."""
    subject = _subject(trust_domain, f"Hallmark CA {trust_domain.name}")
    issuer_name = issuer.subject if issuer is not None else subject
    issuer_key = issuer.public_key() if issuer is not None else subject_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
            critical=False,
        )
    )
    return _finish(builder, signer)


def signing_certificate_csr(trust_domain: TrustDomain, signer: Signer) -> bytes:
    """A DER CSR for the trust domain's CA key, signed by the key manager (for an upstream CA).

    `cryptography` can only build a CSR with a private key in hand, so the request info is
    assembled here and signed through the Signer. The upstream takes the key from it; the
    subject and SAN it puts in the certificate are checked by `check_upstream_signed_ca`.
    """
    subject = _subject(trust_domain, f"Hallmark CA {trust_domain.name}")
    key_info = signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = certification_request_info(subject.public_bytes(), key_info)
    request = signed_request(info, signer.sign_digest(sha256(info)))
    if not x509.load_der_x509_csr(request).is_signature_valid:
        raise InvalidSvid("the key manager's signature over the CA's CSR does not verify")
    return request


def check_upstream_signed_ca(
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    trust_domain: TrustDomain,
    public_key: ec.EllipticCurvePublicKey,
    at: dt.datetime | None = None,
) -> None:
    """Refuse an upstream-signed CA certificate that cannot serve as the trust domain's CA.

    `chain` is what links it to a trust anchor: intermediates first, the anchor last. The
    certificate must hold our key, be a CA that may sign certificates (X509-SVID.md 4.1,
    4.3), name the trust domain as its one URI SAN (X509-SVID.md 3), be valid now, and
    each certificate must be issued by the next.
    """
    if certificate.public_key() != public_key:
        raise InvalidSvid("the upstream's certificate is not for the CA key it was asked to sign")
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    if not constraints.ca or not usage.key_cert_sign:
        raise InvalidSvid("the upstream's certificate is not a CA that may sign certificates")
    if spiffe_id_of(certificate) != trust_domain.id:
        raise InvalidSvid(f"the upstream's certificate does not name {trust_domain.id}")
    moment = at or utcnow()
    if not certificate.not_valid_before_utc <= moment < certificate.not_valid_after_utc:
        raise InvalidSvid("the upstream's certificate is not valid now")
    if not chain:
        raise InvalidSvid("the upstream returned no chain to a trust anchor")
    for child, parent in zip((certificate, *chain), chain, strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise InvalidSvid(
                f"the upstream's chain is broken: {child.subject.rfc4514_string()} is not "
                f"issued by {parent.subject.rfc4514_string()}"
            ) from None


@dataclass(frozen=True)
class LeafRequest:
    """What a leaf X.509-SVID should say; the public key comes from a checked CSR."""

    spiffe_id: SpiffeId
    public_key: ec.EllipticCurvePublicKey
    ttl: dt.timedelta
    dns_names: tuple[str, ...] = ()


def build_leaf(
    request: LeafRequest, *, ca: x509.Certificate, signer: Signer, now: dt.datetime | None = None
) -> x509.Certificate:
    """One leaf X.509-SVID (the same path as a batch)."""
    return build_leaves([request], ca=ca, signer=signer, now=now)[0]


def build_leaves(
    requests: Sequence[LeafRequest],
    *,
    ca: x509.Certificate,
    signer: Signer,
    now: dt.datetime | None = None,
) -> list[x509.Certificate]:
    """Several leaves in one batch: one round trip to a key manager that can batch.

    The TBS certificates come from `LeafTemplate` (DER pieces): byte for byte what
    CertificateBuilder makes of the same leaf (tests/hallmark/test_leafder.py holds that
    reference), without its cost per leaf.
    """
    template = LeafTemplate(ca, now or utcnow(), BACKDATE)
    tbs_list = []
    for request in requests:
        if not request.spiffe_id.path:
            raise InvalidSvid("a leaf X.509-SVID needs a SPIFFE ID with a non-root path")
        common_name = request.dns_names[0] if request.dns_names else None
        tbs_list.append(
            template.tbs(
                subject=_subject_der(request.spiffe_id.trust_domain.name, common_name),
                public_key=request.public_key,
                spiffe_id=str(request.spiffe_id),
                dns_names=request.dns_names,
                ttl=request.ttl,
            )
        )
    signatures = signer.sign_digests([sha256(t) for t in tbs_list])
    return [
        x509.load_der_x509_certificate(signed_certificate(t, s))
        for t, s in zip(tbs_list, signatures, strict=True)
    ]


@functools.lru_cache(maxsize=1024)
def _subject_der(trust_domain: str, common_name: str | None) -> bytes:
    return _subject(TrustDomain(trust_domain), common_name).public_bytes()


def public_key_from_csr(csr_der: bytes) -> ec.EllipticCurvePublicKey:
    """Parse a CSR, check its self-signature, and return its P-256 public key.

    Only the key is taken from a CSR: the SPIFFE ID, lifetime and names come from the
    registration entry, never from what the requester wrote into the CSR.
    """
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise InvalidSvid(f"CSR is not valid DER: {exc}", code="invalid_csr") from None
    try:
        # Both decode the key: a CSR whose key is malformed or of an unknown algorithm raises.
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidSvid(f"CSR key cannot be read: {exc}", code="invalid_csr") from None
    if not valid:
        raise InvalidSvid("CSR signature does not verify", code="invalid_csr")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
        "secp256r1",
        "secp384r1",
    ):
        raise InvalidSvid("CSR key must be EC P-256 or P-384", code="invalid_csr")
    return key


def make_csr(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """A minimal CSR over the key (the server ignores everything but the key)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(private_key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The one SPIFFE ID of an X.509-SVID (X509-SVID.md 2: exactly one URI SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidSvid("certificate has no URI SAN") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise InvalidSvid(f"certificate has {len(uris)} URI SANs; an SVID has exactly one")
    return SpiffeId.parse(uris[0])


def verify_x509_svid(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime | None = None,
) -> SpiffeId:
    """Verify a leaf X.509-SVID chain against a trust domain's X.509 authorities.

    RFC 5280 path validation (by `cryptography.x509.verification`), then the checks of
    X509-SVID.md 5: leaf not a CA, no keyCertSign/cRLSign, one URI SAN, non-root path, and
    the SPIFFE ID in the trust domain of the roots' bundle.
    """
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    if not chain:
        raise InvalidSvid("empty certificate chain")
    if not roots:
        raise InvalidSvid("no X.509 authorities to verify against")
    leaf = chain[0]
    spiffe_id = spiffe_id_of(leaf)
    if not spiffe_id.path:
        raise InvalidSvid("leaf SPIFFE ID has no path")
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        # X509-SVID.md 4: an SVID carries basic constraints and key usage.
        raise InvalidSvid(f"leaf certificate lacks an extension: {exc}") from None
    if constraints.ca:
        raise InvalidSvid("leaf certificate is a CA")
    if usage.key_cert_sign or usage.crl_sign:
        raise InvalidSvid("leaf certificate may sign certificates or CRLs")
    verifier = (
        PolicyBuilder().store(Store(list(roots))).time(at or utcnow()).build_client_verifier()
    )
    try:
        verifier.verify(leaf, list(chain[1:]))
    except VerificationError as exc:
        raise InvalidSvid(f"chain does not verify against the bundle: {exc}") from None
    return spiffe_id
