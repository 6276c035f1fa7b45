"""tpm_devid: the node proves it holds a DevID whose key lives in a genuine TPM.

The DevID (a "local device identity": a TPM-resident signing key and a certificate for it
from the tenant's DevID CA) is provisioned out of band, as for SPIRE's plugin of the same
name. Attestation has two proofs, answered in one challenge:

1. possession: the DevID key signs a fresh nonce, and the DevID certificate chains to the
   tenant's `devid_ca_pem`;
2. residency: the agent creates an attestation key (AK) under the TPM's endorsement key
   (EK), the AK certifies the DevID key (TPM2_Certify: both are in one TPM), the EK
   certificate chains to the tenant's `endorsement_ca_pem` (the TPM makers' CAs), and the
   agent activates a credential the server made for that EK and that AK's name
   (TPM2_MakeCredential / TPM2_ActivateCredential: only the TPM holding the EK can unwrap
   it, and only for an AK it holds with exactly the attributes the server checked).

Agent → server, JSON with base64 values: `devid_certificates` (DER, leaf first),
`devid_public`, `ek_public`, `ak_public` (TPM2B_PUBLIC), `ek_certificate` (DER),
`certify_info` (the TPMS_ATTEST of TPM2_Certify) and `certify_signature` (the AK's
signature over it: DER ECDSA or raw RSA).
Server → agent: `devid_nonce` (32 random bytes), `credential` (TPM2B_ID_OBJECT contents)
and `secret` (the EK-encrypted seed), plus `commitment`, the SHA-256 of the credential's
value (the server keeps only the challenge it sent; a hash of 32 random bytes tells the
agent nothing it could answer with).
Agent → server: `devid_signature` over the nonce (ECDSA or RSASSA, SHA-256) and
`activated_secret`.

Every challenge is fresh, so a recorded answer is worthless. The agent ID is SPIRE's
`tpm_devid/<SHA-1 fingerprint of the DevID certificate, hex>`; selectors are SPIRE's
(`tpm_devid:subject:cn:`, `tpm_devid:issuer:cn:`, `tpm_devid:ca:fingerprint:` for each
certificate above the leaf). The agent half drives Debian's tpm2-tools against a TPM device
(`/dev/tpmrm0`) or a swtpm socket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.modes import CFB  # TPM 2.0's credential cipher
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from attestors.node.base import (
    DEFAULT_CLOCK_SKEW,
    AgentAttestor,
    AttestedNode,
    InvalidAttestationPayload,
    InvalidAttestorConfig,
    NodeAttestationFailed,
    NodeLookup,
    ServerAttestor,
    require_keys,
)
from attestors.node.x509pop import (
    MAX_BUNDLE_PEM,
    MAX_CHAIN,
    _b64,
    _name,
    _unb64,
    _verify_signed_by,
    fingerprint,
    load_pem_bundle,
    verified_chain,
)
from hallmark.errors import HallmarkError

ATTESTATION_TYPE = "tpm_devid"
NONCE_BYTES = 32
MAX_BLOB = 4096
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 4096  # what TPMs make; bounds the server's work
# The commitment to the credential's value names this protocol, so it hashes nothing else.
_COMMITMENT_PREFIX = b"hallmark tpm_devid credential activation\x00"

# TPM 2.0 algorithm, curve and structure tags (TCG Algorithm Registry, TPM 2.0 Part 2).
ALG_RSA, ALG_ECC, ALG_NULL, ALG_AES, ALG_CFB = 0x0001, 0x0023, 0x0010, 0x0006, 0x0043
ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA = 0x0014, 0x0016, 0x0018
_SCHEMES_WITH_COUNT = {0x001A}  # ECDAA carries a count after its hash
_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    0x0004: hashes.SHA1,
    0x000B: hashes.SHA256,
    0x000C: hashes.SHA384,
    0x000D: hashes.SHA512,
}
_CURVES: dict[int, type[ec.EllipticCurve]] = {
    0x0003: ec.SECP256R1,
    0x0004: ec.SECP384R1,
    0x0005: ec.SECP521R1,
}
FIXED_TPM, FIXED_PARENT, SENSITIVE_DATA_ORIGIN = 1 << 1, 1 << 4, 1 << 5
RESTRICTED, DECRYPT, SIGN = 1 << 16, 1 << 17, 1 << 18
TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY = 0xFF544347, 0x8017
# TCG EK Credential Profile: the NV index of the RSA 2048 EK certificate.
EK_CERTIFICATE_NV_INDEX = "0x01c00002"
# tpm2-tools' file format for a credential (tpm2_makecredential's output).
_CREDENTIAL_FILE_MAGIC, _CREDENTIAL_FILE_VERSION = 0xBADCC0DE, 1


class _Reader:
    """Big-endian TPM marshalling, refusing short input as invalid attestation data."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = data, 0, what

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise InvalidAttestationPayload(f"tpm_devid {self.what} is truncated")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def tpm2b(self) -> bytes:
        return self.take(self.u16())

    def end(self) -> None:
        if self.at != len(self.data):
            raise InvalidAttestationPayload(f"tpm_devid {self.what} has trailing bytes")


@dataclass(frozen=True)
class TpmPublic:
    """A TPMT_PUBLIC: what the server checks of a TPM key, and its TPM name."""

    area: bytes  # the marshalled TPMT_PUBLIC (the name hashes these bytes)
    type: int
    name_alg: int
    attributes: int
    symmetric: tuple[int, int, int]  # (algorithm, key bits, mode); ALG_NULL when none
    scheme: int
    scheme_hash: int
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    def has(self, *flags: int) -> bool:
        return all(self.attributes & flag for flag in flags)

    @property
    def name(self) -> bytes:
        """TPM name: the name algorithm, then the hash of the public area with it."""
        digest = hashes.Hash(_hash(self.name_alg, "name"))
        digest.update(self.area)
        return struct.pack(">H", self.name_alg) + digest.finalize()


def _hash(alg: int, what: str) -> hashes.HashAlgorithm:
    try:
        return _HASHES[alg]()
    except KeyError:
        raise InvalidAttestationPayload(f"tpm_devid {what} uses hash 0x{alg:04x}") from None


def parse_public(blob: bytes, what: str) -> TpmPublic:
    """A TPM2B_PUBLIC (as tpm2-tools writes it) of an RSA or ECC key."""
    outer = _Reader(blob, what)
    area = outer.tpm2b()
    outer.end()
    r = _Reader(area, what)
    kind, name_alg, attributes = r.u16(), r.u16(), r.u32()
    r.tpm2b()  # authPolicy
    sym_alg = r.u16()
    symmetric = (sym_alg, r.u16(), r.u16()) if sym_alg != ALG_NULL else (ALG_NULL, 0, 0)
    scheme = r.u16()
    scheme_hash = r.u16() if scheme != ALG_NULL else ALG_NULL
    if scheme in _SCHEMES_WITH_COUNT:
        r.u16()
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kind == ALG_RSA:
        r.u16()  # keyBits: the modulus says it
        exponent = r.u32() or 65537
        modulus = int.from_bytes(r.tpm2b())
        if not MIN_RSA_BITS <= modulus.bit_length() <= MAX_RSA_BITS:
            raise InvalidAttestationPayload(
                f"tpm_devid {what} must be an RSA key of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
            )
        try:
            key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError:
            raise InvalidAttestationPayload(f"tpm_devid {what} is not an RSA key") from None
    elif kind == ALG_ECC:
        curve = _CURVES.get(r.u16())
        if r.u16() != ALG_NULL:  # kdf scheme
            r.u16()
        x, y = int.from_bytes(r.tpm2b()), int.from_bytes(r.tpm2b())
        if curve is None:
            raise InvalidAttestationPayload(f"tpm_devid {what} uses an unsupported curve")
        try:
            key = ec.EllipticCurvePublicNumbers(x, y, curve()).public_key()
        except ValueError:
            raise InvalidAttestationPayload(f"tpm_devid {what} is not a point") from None
    else:
        raise InvalidAttestationPayload(f"tpm_devid {what} is neither an RSA nor an ECC key")
    r.end()
    _hash(name_alg, what)
    return TpmPublic(area, kind, name_alg, attributes, symmetric, scheme, scheme_hash, key)


def certified_name(attest: bytes) -> bytes:
    """The name of the object a TPMS_ATTEST of TPM2_Certify vouches for."""
    r = _Reader(attest, "certify_info")
    if r.u32() != TPM_GENERATED_VALUE or r.u16() != TPM_ST_ATTEST_CERTIFY:
        raise NodeAttestationFailed(
            "certify_info is not a TPM-generated certification", code="certification_failed"
        )
    r.tpm2b()  # qualifiedSigner
    r.tpm2b()  # extraData
    r.take(17 + 8)  # clockInfo, firmwareVersion
    name = r.tpm2b()
    r.tpm2b()  # qualifiedName
    r.end()
    return name


def _public_numbers_equal(a: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, b: Any) -> bool:
    return bool(
        a.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == b.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def verify_signature(
    key: Any, message: bytes, signature: bytes, *, scheme: int, hash_alg: hashes.HashAlgorithm
) -> bool:
    """ECDSA (DER) or RSASSA/RSAPSS, as a TPM signs with that scheme."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hash_alg))
        elif isinstance(key, rsa.RSAPublicKey) and scheme == ALG_RSAPSS:
            key.verify(
                signature,
                message,
                padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=padding.PSS.AUTO),
                hash_alg,
            )
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hash_alg)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def kdfa(
    hash_alg: hashes.HashAlgorithm, key: bytes, label: bytes, context: bytes, bits: int
) -> bytes:
    """TPM 2.0's KDFa (SP 800-108 counter mode with HMAC; context V is empty here)."""
    out, counter = b"", 1
    while len(out) * 8 < bits:
        block = struct.pack(">I", counter) + label + b"\x00" + context + struct.pack(">I", bits)
        out += hmac.new(key, block, hash_alg.name).digest()
        counter += 1
    return out[: bits // 8]


def make_credential(ek: TpmPublic, ak_name: bytes, secret: bytes) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential in software: (TPM2B_ID_OBJECT contents, encrypted seed) that only
    the TPM holding `ek` can open, and only for a loaded object named `ak_name`."""
    assert isinstance(ek.key, rsa.RSAPublicKey)  # checked by _endorsement_key
    name_hash = _hash(ek.name_alg, "ek_public")
    seed = secrets.token_bytes(name_hash.digest_size)
    encrypted_seed = ek.key.encrypt(
        seed,
        padding.OAEP(mgf=padding.MGF1(name_hash), algorithm=name_hash, label=b"IDENTITY\x00"),
    )
    sym_key = kdfa(name_hash, seed, b"STORAGE", ak_name, ek.symmetric[1])
    encryptor = Cipher(algorithms.AES(sym_key), CFB(b"\x00" * 16)).encryptor()
    identity = encryptor.update(struct.pack(">H", len(secret)) + secret) + encryptor.finalize()
    hmac_key = kdfa(name_hash, seed, b"INTEGRITY", b"", name_hash.digest_size * 8)
    integrity = hmac.new(hmac_key, identity + ak_name, name_hash.name).digest()
    return struct.pack(">H", len(integrity)) + integrity + identity, encrypted_seed


def commitment(secret: bytes) -> str:
    return hashlib.sha256(_COMMITMENT_PREFIX + secret).hexdigest()


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidAttestationPayload(f"tpm_devid {what} is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidAttestationPayload(f"tpm_devid {what} must be a JSON object")
    return document


def _blob(document: Mapping[str, Any], name: str) -> bytes:
    data = _unb64(document.get(name), f"tpm_devid {name}")
    if not data or len(data) > MAX_BLOB:
        raise InvalidAttestationPayload(f"tpm_devid {name} must hold 1 to {MAX_BLOB} bytes")
    return data


def _certificate(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise InvalidAttestationPayload(f"tpm_devid {what} is not DER X.509") from None


@dataclass(frozen=True)
class Evidence:
    """A parsed tpm_devid payload."""

    chain: list[x509.Certificate]
    devid: TpmPublic
    ek: TpmPublic
    ak: TpmPublic
    ek_certificate: x509.Certificate
    certify_info: bytes
    certify_signature: bytes


def parse_payload(payload: bytes) -> Evidence:
    document = _json(payload, "attestation data")
    ders = document.get("devid_certificates")
    if not isinstance(ders, list) or not ders or len(ders) > MAX_CHAIN:
        raise InvalidAttestationPayload(
            f"tpm_devid devid_certificates must list 1 to {MAX_CHAIN} base64 DER certificates, "
            "leaf first"
        )
    chain = [_certificate(_unb64(d, "tpm_devid certificate"), "certificate") for d in ders]
    return Evidence(
        chain=chain,
        devid=parse_public(_blob(document, "devid_public"), "devid_public"),
        ek=parse_public(_blob(document, "ek_public"), "ek_public"),
        ak=parse_public(_blob(document, "ak_public"), "ak_public"),
        ek_certificate=_certificate(_blob(document, "ek_certificate"), "ek_certificate"),
        certify_info=_blob(document, "certify_info"),
        certify_signature=_blob(document, "certify_signature"),
    )


def _bundle(config: Mapping[str, Any], name: str) -> str:
    pem = config[name]
    if not isinstance(pem, str) or len(pem) > MAX_BUNDLE_PEM or not load_pem_bundle(pem):
        raise InvalidAttestorConfig(
            f"{name} must be a PEM string holding at least one certificate",
            code="invalid_ca_bundle",
        )
    return pem


class TpmDevidServer(ServerAttestor):
    """Checks the DevID chain, the TPM evidence, then the answered challenge."""

    type = ATTESTATION_TYPE
    can_reattest = True

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        # SPIRE's devid_ca_path and endorsement_ca_path, as PEM text; both are required:
        # without the makers' CAs any software "TPM" would pass the residency proof.
        names = frozenset({"devid_ca_pem", "endorsement_ca_pem"})
        require_keys(config, known=set(names), required=names)
        return {name: _bundle(config, name) for name in sorted(names)}

    def _checked(self, payload: bytes) -> tuple[Evidence, list[x509.Certificate]]:
        evidence = parse_payload(payload)
        now = self.now()
        path = verified_chain(
            evidence.chain,
            load_pem_bundle(self.config["devid_ca_pem"]),
            now=now,
            bundle="tpm_devid DevID CA bundle",
        )
        self._endorsement_key(evidence, now)
        devid, ak = evidence.devid, evidence.ak
        if not _public_numbers_equal(devid.key, evidence.chain[0].public_key()):
            raise NodeAttestationFailed(
                "devid_public is not the key of the DevID certificate", code="devid_key_mismatch"
            )
        if not devid.has(FIXED_TPM, SIGN):
            raise NodeAttestationFailed(
                "the DevID key may leave its TPM or cannot sign (fixedTPM and sign are needed)",
                code="invalid_devid_key",
            )
        if not ak.has(FIXED_TPM, FIXED_PARENT, SENSITIVE_DATA_ORIGIN, RESTRICTED, SIGN) or (
            ak.attributes & DECRYPT
        ):
            raise NodeAttestationFailed(
                "the attestation key is not a TPM-generated, restricted signing key",
                code="invalid_attestation_key",
            )
        if not verify_signature(
            ak.key,
            evidence.certify_info,
            evidence.certify_signature,
            scheme=ak.scheme,
            hash_alg=_hash(ak.scheme_hash, "ak_public scheme"),
        ) or not hmac.compare_digest(certified_name(evidence.certify_info), devid.name):
            raise NodeAttestationFailed(
                "the attestation key did not certify the DevID key (not in the same TPM)",
                code="certification_failed",
            )
        return evidence, path

    def _endorsement_key(self, evidence: Evidence, now: Any) -> None:
        certificate, ek = evidence.ek_certificate, evidence.ek
        roots = load_pem_bundle(self.config["endorsement_ca_pem"])
        skew = DEFAULT_CLOCK_SKEW
        valid = (
            certificate.not_valid_before_utc - skew <= now <= certificate.not_valid_after_utc + skew
        )
        if not valid or not any(_verify_signed_by(certificate, r) for r in roots):
            raise NodeAttestationFailed(
                "the EK certificate is not valid under the tenant's endorsement CA bundle",
                code="untrusted_endorsement_certificate",
            )
        if not _public_numbers_equal(ek.key, certificate.public_key()):
            raise NodeAttestationFailed(
                "ek_public is not the key of the EK certificate", code="endorsement_key_mismatch"
            )
        if (
            ek.type != ALG_RSA
            or not ek.has(FIXED_TPM, FIXED_PARENT, RESTRICTED, DECRYPT)
            or ek.symmetric[0] != ALG_AES
            or ek.symmetric[2] != ALG_CFB
        ):
            raise NodeAttestationFailed(
                "the endorsement key is not an RSA storage key with AES-CFB (TCG EK template)",
                code="invalid_endorsement_key",
            )

    def challenge(self, payload: bytes) -> bytes:
        evidence, _ = self._checked(payload)  # no challenge for evidence we refuse
        secret = secrets.token_bytes(NONCE_BYTES)
        credential, encrypted_seed = make_credential(evidence.ek, evidence.ak.name, secret)
        return json.dumps(
            {
                "devid_nonce": _b64(secrets.token_bytes(NONCE_BYTES)),
                "credential": _b64(credential),
                "secret": _b64(encrypted_seed),
                "commitment": commitment(secret),
            }
        ).encode()

    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        evidence, path = self._checked(payload)
        if challenge is None or response is None:
            raise NodeAttestationFailed(
                "tpm_devid needs an answered challenge", code="challenge_missing"
            )
        asked, answer = _json(challenge, "challenge"), _json(response, "challenge response")
        nonce = _unb64(asked.get("devid_nonce"), "devid_nonce")
        leaf = evidence.chain[0]
        if not verify_signature(
            leaf.public_key(),
            nonce,
            _unb64(answer.get("devid_signature"), "devid_signature"),
            scheme=ALG_RSASSA,
            hash_alg=hashes.SHA256(),
        ):
            raise NodeAttestationFailed(
                "the nonce's signature does not verify with the DevID certificate's key",
                code="challenge_failed",
            )
        activated = _unb64(answer.get("activated_secret"), "activated_secret")
        if not hmac.compare_digest(commitment(activated), str(asked.get("commitment"))):
            raise NodeAttestationFailed(
                "the credential was not activated: the attestation key is not in the TPM of "
                "the endorsement key",
                code="credential_activation_failed",
            )
        return AttestedNode(
            agent_path=f"{ATTESTATION_TYPE}/{fingerprint(leaf)}",
            selectors=tuple(sorted(selectors_of(leaf, path[1:]))),
            can_reattest=True,
            detail={
                "fingerprint": fingerprint(leaf),
                "ek_certificate_fingerprint": fingerprint(evidence.ek_certificate),
            },
        )


def selectors_of(leaf: x509.Certificate, issuers: Sequence[x509.Certificate]) -> set[str]:
    """SPIRE's tpm_devid selectors: subject and issuer CN, each CA above the leaf."""
    found = {f"{ATTESTATION_TYPE}:ca:fingerprint:{fingerprint(c)}" for c in issuers}
    subject, issuer = (
        _name(leaf.subject, x509.NameOID.COMMON_NAME),
        _name(leaf.issuer, x509.NameOID.COMMON_NAME),
    )
    if subject:
        found.add(f"{ATTESTATION_TYPE}:subject:cn:{subject}")
    if issuer:
        found.add(f"{ATTESTATION_TYPE}:issuer:cn:{issuer}")
    return found


class TpmError(HallmarkError):
    """The agent's TPM (or tpm2-tools) refused or failed an operation."""

    code = "tpm_error"
    http_status = 500


def _der_length(data: bytes) -> int:
    """The length of the DER SEQUENCE at the start of `data` (NV indices are padded)."""
    if len(data) < 2 or data[0] != 0x30:  # noqa: PLR2004
        raise TpmError("the EK certificate in the TPM is not DER", code="ek_certificate_missing")
    if data[1] < 0x80:  # noqa: PLR2004
        return 2 + data[1]
    count = data[1] & 0x7F
    return 2 + count + int.from_bytes(data[2 : 2 + count])


def default_tcti(device_path: str | None) -> str:
    """The tpm2-tools TCTI for a TPM device, a swtpm socket, or the first device found."""
    if device_path is None:
        found = next((p for p in ("/dev/tpmrm0", "/dev/tpm0") if os.path.exists(p)), None)
        if found is None:
            raise InvalidAttestorConfig(
                "[node_attestor.tpm_devid] found no TPM (/dev/tpmrm0, /dev/tpm0); set "
                "tpm_device_path or tcti",
                code="missing_setting",
            )
        device_path = found
    try:
        is_socket = stat.S_ISSOCK(os.stat(device_path).st_mode)
    except OSError:
        is_socket = False
    return f"swtpm:path={device_path}" if is_socket else f"device:{device_path}"


class TpmDevidAgent(AgentAttestor):
    """The agent half: SPIRE's `tpm_device_path`, `devid_cert_path`, `devid_priv_path`,
    `devid_pub_path`, `devid_password`; ours: `tcti` (any tpm2-tools TCTI string),
    `devid_parent` (the DevID key's parent: `ecc`, the owner-hierarchy primary key
    `tpm2_createprimary -C o -G ecc` makes, or a persistent handle `0x81...`)
    and `ek_certificate_path` (default: read from the TPM's NV index 0x01c00002)."""

    type = ATTESTATION_TYPE
    can_reattest = True

    def __init__(  # noqa: PLR0913 - SPIRE's settings
        self,
        *,
        tcti: str,
        devid_certificates: Sequence[x509.Certificate],
        devid_public: Path,
        devid_private: Path,
        devid_password: str = "",
        devid_parent: str = "ecc",
        ek_certificate: Path | None = None,
    ) -> None:
        if shutil.which("tpm2_createek") is None:
            raise InvalidAttestorConfig(
                "tpm_devid needs tpm2-tools (Debian: apt-get install tpm2-tools)",
                code="tpm2_tools_missing",
            )
        self.tcti, self.certificates = tcti, list(devid_certificates)
        self.devid_public, self.devid_private = devid_public, devid_private
        self.devid_password, self.devid_parent = devid_password, devid_parent
        self.ek_certificate = ek_certificate
        self._work: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TpmDevidAgent:
        paths = {
            k: settings.get(k) for k in ("devid_cert_path", "devid_priv_path", "devid_pub_path")
        }
        if not all(isinstance(v, str) and v for v in paths.values()):
            raise InvalidAttestorConfig(
                "[node_attestor.tpm_devid] needs devid_cert_path, devid_priv_path and "
                "devid_pub_path",
                code="missing_setting",
            )
        for name in ("endorsement_hierarchy_password", "owner_hierarchy_password"):
            if settings.get(name):
                raise InvalidAttestorConfig(
                    f"[node_attestor.tpm_devid] {name} is not supported yet; use empty "
                    "hierarchy passwords",
                    code="unsupported_setting",
                )
        parent = str(settings.get("devid_parent", "ecc"))
        if parent != "ecc" and not re.fullmatch(r"0x81[0-9a-fA-F]{6}", parent):
            raise InvalidAttestorConfig(
                "devid_parent must be ecc or a persistent handle 0x81xxxxxx",
                code="invalid_setting",
            )
        tcti = settings.get("tcti") or default_tcti(settings.get("tpm_device_path") or None)
        ek_certificate = settings.get("ek_certificate_path")
        return cls(
            tcti=str(tcti),
            devid_certificates=x509.load_pem_x509_certificates(
                Path(str(paths["devid_cert_path"])).read_bytes()
            ),
            devid_public=Path(str(paths["devid_pub_path"])),
            devid_private=Path(str(paths["devid_priv_path"])),
            devid_password=str(settings.get("devid_password", "")),
            devid_parent=parent,
            ek_certificate=Path(ek_certificate) if ek_certificate else None,
        )

    def _tpm(self, *args: str) -> None:
        """One tpm2-tools command in the attestation's work directory, then the transient
        objects flushed (a swtpm or /dev/tpm0 has no resource manager; contexts are saved)."""
        assert self._work is not None
        for command in ([*args], ["tpm2_flushcontext", "-t"]):
            done = subprocess.run(  # noqa: S603 - fixed tool names, our own arguments
                command,
                cwd=self._work.name,
                env={**os.environ, "TPM2TOOLS_TCTI": self.tcti},
                capture_output=True,
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
                raise TpmError(f"{command[0]} failed: {' '.join(tail)[:300]}")

    def _password_file(self) -> str:
        """The DevID password as tpm2-tools reads it from a file in the private work
        directory (never on a command line other local users can read)."""
        path = self._file("devid.auth")
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(self.devid_password, encoding="utf-8")
        return f"file:{path.name}"

    def _file(self, name: str) -> Path:
        assert self._work is not None
        return Path(self._work.name) / name

    def payload(self) -> bytes:
        if self._work is not None:
            self._work.cleanup()
        self._work = tempfile.TemporaryDirectory(prefix="hallmark-tpm-")
        self._tpm("tpm2_createek", "-Q", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        self._tpm(
            "tpm2_createak", "-Q", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256",
            "-s", "ecdsa", "-u", "ak.pub", "-n", "ak.name",
        )  # fmt: skip
        parent = self.devid_parent
        if parent == "ecc":
            self._tpm("tpm2_createprimary", "-Q", "-C", "o", "-G", "ecc", "-c", "parent.ctx")
            parent = "parent.ctx"
        self._tpm(
            "tpm2_load", "-Q", "-C", parent, "-u", str(self.devid_public),
            "-r", str(self.devid_private), "-c", "devid.ctx",
        )  # fmt: skip
        self._tpm(
            "tpm2_certify", "-Q", "-c", "devid.ctx", "-C", "ak.ctx", "-g", "sha256",
            "-o", "certify.out", "-s", "certify.sig", "-f", "plain",
            *(["-P", self._password_file()] if self.devid_password else []),
        )  # fmt: skip
        if self.ek_certificate is not None:
            ek_der = self.ek_certificate.read_bytes()
        else:
            self._tpm("tpm2_nvread", EK_CERTIFICATE_NV_INDEX, "-C", "o", "-o", "ek.crt")
            ek_der = self._file("ek.crt").read_bytes()
        ek_der = ek_der[: _der_length(ek_der)]
        ders = [c.public_bytes(serialization.Encoding.DER) for c in self.certificates]
        read = self._file
        return json.dumps(
            {
                "devid_certificates": [_b64(d) for d in ders],
                "devid_public": _b64(self.devid_public.read_bytes()),
                "ek_public": _b64(read("ek.pub").read_bytes()),
                "ak_public": _b64(read("ak.pub").read_bytes()),
                "ek_certificate": _b64(ek_der),
                "certify_info": _b64(read("certify.out").read_bytes()),
                "certify_signature": _b64(read("certify.sig").read_bytes()),
            }
        ).encode()

    def respond(self, challenge: bytes) -> bytes:
        if self._work is None:
            raise TpmError("tpm_devid got a challenge before its attestation data")
        try:
            asked = _json(challenge, "challenge")
            self._file("nonce.bin").write_bytes(_unb64(asked.get("devid_nonce"), "devid_nonce"))
            scheme = (
                "rsassa"
                if isinstance(self.certificates[0].public_key(), rsa.RSAPublicKey)
                else "ecdsa"
            )
            self._tpm(
                "tpm2_sign", "-Q", "-c", "devid.ctx", "-g", "sha256", "-s", scheme,
                "-f", "plain", "-o", "devid.sig",
                *(["-p", self._password_file()] if self.devid_password else []), "nonce.bin",
            )  # fmt: skip
            credential = _unb64(asked.get("credential"), "credential")
            seed = _unb64(asked.get("secret"), "secret")
            self._file("credential.bin").write_bytes(
                struct.pack(">II", _CREDENTIAL_FILE_MAGIC, _CREDENTIAL_FILE_VERSION)
                + struct.pack(">H", len(credential))
                + credential
                + struct.pack(">H", len(seed))
                + seed
            )
            self._tpm("tpm2_startauthsession", "-Q", "--policy-session", "-S", "session.ctx")
            try:
                self._tpm("tpm2_policysecret", "-Q", "-S", "session.ctx", "-c", "e")
                self._tpm(
                    "tpm2_activatecredential", "-Q", "-c", "ak.ctx", "-C", "ek.ctx",
                    "-i", "credential.bin", "-o", "activated.bin", "-P", "session:session.ctx",
                )  # fmt: skip
            finally:
                self._tpm("tpm2_flushcontext", "session.ctx")
            return json.dumps(
                {
                    "devid_signature": _b64(self._file("devid.sig").read_bytes()),
                    "activated_secret": _b64(self._file("activated.bin").read_bytes()),
                }
            ).encode()
        finally:
            self._work.cleanup()
            self._work = None
