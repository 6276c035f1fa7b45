"""The few DER encodings needed to assemble a certificate signed outside `cryptography`."""

from __future__ import annotations

# AlgorithmIdentifier { ecdsa-with-SHA256 } (RFC 5758 3.2: parameters absent).
ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length, contents."""
    return bytes([tag]) + _length(len(body)) + body


def sequence(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def bit_string(data: bytes) -> bytes:
    return tlv(0x03, b"\x00" + data)


# CertificationRequestInfo parts (RFC 2986 4.1): version 0 and an empty attribute set.
CSR_VERSION_1 = bytes.fromhex("020100")
NO_ATTRIBUTES = bytes.fromhex("a000")


def certification_request_info(subject_der: bytes, public_key_info_der: bytes) -> bytes:
    """CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, [0] attrs }."""
    return sequence(CSR_VERSION_1, subject_der, public_key_info_der, NO_ATTRIBUTES)


def signed_certificate(tbs_der: bytes, signature_der: bytes) -> bytes:
    """Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }."""
    return sequence(tbs_der, ECDSA_WITH_SHA256, bit_string(signature_der))


def signed_request(info_der: bytes, signature_der: bytes) -> bytes:
    """CertificationRequest ::= SEQUENCE { info, signatureAlgorithm, signature }."""
    return sequence(info_der, ECDSA_WITH_SHA256, bit_string(signature_der))
