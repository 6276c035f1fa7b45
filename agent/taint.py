"""Tainted authorities: which held SVIDs were signed by one, and must be replaced at once.

FetchBundle lists the trust domain's tainted X.509 authorities (DER) and JWT key ids. An
X.509-SVID is tainted when a certificate of its chain was issued by a tainted authority (its
Authority Key Identifier is the authority's Subject Key Identifier; without identifiers, the
signature is checked) or is itself one. A JWT-SVID is tainted when its header `kid` is.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature


def _subject_key_id(certificate: x509.Certificate) -> bytes | None:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return extension.value.digest


def _authority_key_id(certificate: x509.Certificate) -> bytes | None:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return extension.value.key_identifier


def _issued_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def jwt_key_id(token: str) -> str:
    """The `kid` of a JWS compact token's protected header ("" when it has none or is bad)."""
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        return ""
    kid = decoded.get("kid") if isinstance(decoded, dict) else None
    return kid if isinstance(kid, str) else ""


@dataclass(frozen=True)
class Taint:
    """The trust domain's tainted authorities, as the latest FetchBundle listed them."""

    x509_authorities: tuple[x509.Certificate, ...] = ()
    jwt_key_ids: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, authorities: Iterable[x509.Certificate], key_ids: Iterable[str]) -> Taint:
        return cls(tuple(authorities), frozenset(key_ids))

    def __bool__(self) -> bool:
        return bool(self.x509_authorities or self.jwt_key_ids)

    @cached_property
    def _key_ids(self) -> tuple[frozenset[bytes], tuple[x509.Certificate, ...]]:
        """The authorities' Subject Key Identifiers, and the authorities without one."""
        ids = {a: _subject_key_id(a) for a in self.x509_authorities}
        known = frozenset(k for k in ids.values() if k is not None)
        return known, tuple(a for a, k in ids.items() if k is None)

    def signed(self, chain: Sequence[x509.Certificate]) -> bool:
        """True when an authority of this set issued (or is) a certificate of `chain`."""
        if not self.x509_authorities:
            return False
        tainted_ids, unidentified = self._key_ids
        for certificate in chain:
            if certificate in self.x509_authorities:
                return True
            key_id = _authority_key_id(certificate)
            if key_id is not None and key_id in tainted_ids:
                return True
            candidates = self.x509_authorities if key_id is None else unidentified
            if any(
                certificate.issuer == authority.subject and _issued_by(certificate, authority)
                for authority in candidates
            ):
                return True
        return False

    def jwt_signed(self, token: str) -> bool:
        return bool(self.jwt_key_ids) and jwt_key_id(token) in self.jwt_key_ids
