"""Leaf X.509-SVID TBS certificates assembled from DER pieces, for minting at volume.

`CertificateBuilder` needs Python objects for every field and a throwaway signature before it
hands out TBS bytes; minting spent most of its time there. These are the same bytes
(tests/hallmark/test_leafder.py compares them with `_leaf_builder`'s), made an order of
magnitude cheaper: what depends only on the CA (issuer name, authority key id, the fixed
extensions) or on the batch (validity) is encoded once; per leaf only the serial, subject,
key, key id and SANs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.der import ECDSA_WITH_SHA256, sequence, tlv

_V3 = bytes.fromhex("a003020102")
# The extensions `_leaf_builder` adds with fixed values, DER, critical where it says so.
_BASIC_CONSTRAINTS = bytes.fromhex("300c0603551d130101ff04023000")
_KEY_USAGE = bytes.fromhex("300e0603551d0f0101ff0404030203a8")
_EXTENDED_KEY_USAGE = bytes.fromhex(
    "301d0603551d250416301406082b0601050507030106082b06010505070302"
)
_SKI_OID = bytes.fromhex("0603551d0e")
_AKI_OID = bytes.fromhex("0603551d23")
_SAN_OID = bytes.fromhex("0603551d11")
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _time(moment: dt.datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime after."""
    moment = moment.astimezone(dt.UTC)
    if moment.year < 2050:
        return tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode())


def _spki_and_key_id(key: ec.EllipticCurvePublicKey) -> tuple[bytes, bytes]:
    """The SubjectPublicKeyInfo and its key id: SHA-1 of the subjectPublicKey bits (RFC 5280
    4.2.1.2 method 1, as cryptography's SubjectKeyIdentifier.from_public_key does)."""
    spki = key.public_bytes(*_SPKI)
    point = spki[-(1 + 2 * ((key.curve.key_size + 7) // 8)) :]  # uncompressed point, last
    return spki, hashlib.sha1(point).digest()  # noqa: S324 - an identifier, not a signature


class LeafTemplate:
    """TBS certificates of leaves signed by one CA at one moment."""

    def __init__(self, ca: x509.Certificate, now: dt.datetime, backdate: dt.timedelta) -> None:
        key = ca.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise TypeError("an X.509 authority's key is EC")
        _, key_id = _spki_and_key_id(key)
        self._issuer = ca.subject.public_bytes()
        self._aki = sequence(_AKI_OID, tlv(0x04, sequence(tlv(0x80, key_id))))
        self._ca_not_after = ca.not_valid_after_utc
        self._now = now
        self._not_before = _time(now - backdate)
        self._validity: dict[dt.timedelta, bytes] = {}

    def _validity_for(self, ttl: dt.timedelta) -> bytes:
        found = self._validity.get(ttl)
        if found is None:
            not_after = min(self._now + ttl, self._ca_not_after)
            found = self._validity[ttl] = sequence(self._not_before, _time(not_after))
        return found

    def tbs(
        self,
        *,
        subject: bytes,
        public_key: ec.EllipticCurvePublicKey,
        spiffe_id: str,
        dns_names: Sequence[str],
        ttl: dt.timedelta,
        serial: int | None = None,
    ) -> bytes:
        spki, key_id = _spki_and_key_id(public_key)
        sans = tlv(0x86, spiffe_id.encode()) + b"".join(tlv(0x82, n.encode()) for n in dns_names)
        extensions = b"".join(
            (
                _BASIC_CONSTRAINTS,
                _KEY_USAGE,
                _EXTENDED_KEY_USAGE,
                sequence(_SKI_OID, tlv(0x04, tlv(0x04, key_id))),
                self._aki,
                sequence(_SAN_OID, tlv(0x04, sequence(sans))),
            )
        )
        if serial is None:  # as x509.random_serial_number: 159 random bits
            serial = int.from_bytes(os.urandom(20), "big") >> 1
        return sequence(
            _V3,
            tlv(0x02, serial.to_bytes((serial.bit_length() + 8) // 8, "big")),
            ECDSA_WITH_SHA256,
            self._issuer,
            self._validity_for(ttl),
            subject,
            spki,
            tlv(0xA3, sequence(extensions)),
        )
