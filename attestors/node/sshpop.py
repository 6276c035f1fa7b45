"""sshpop: the node proves possession of the key of an SSH host certificate from the tenant's
SSH certificate authority.

Agent → server: `{"certificate": "<the host certificate, OpenSSH one-line format>"}`.
Server → agent: `{"nonce": <base64 32 random bytes>}`.
Agent → server: `{"signature": <base64>}`, the host key's signature over the nonce (Ed25519,
ECDSA with the curve's hash, or RSA PKCS#1 v1.5 with SHA-256).
The certificate must be a host certificate, signed by one of `cert_authorities` (OpenSSH
public keys, SPIRE's setting), valid now (with clock skew), and, with `canonical_domain`,
name a principal in that domain. The agent ID is SPIRE's `sshpop/<fingerprint>`, the
URL-safe unpadded base64 SHA-256 of the certificate's public key; selectors:
`sshpop:principal:<name>` for each valid principal.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import ssh

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
    string_list,
)

ATTESTATION_TYPE = "sshpop"
NONCE_BYTES = 32
MAX_CERTIFICATE = 16 * 1024
DEFAULT_HOST_KEY = "/etc/ssh/ssh_host_rsa_key"


def _raw(key: Any) -> bytes:
    return bytes(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )


def fingerprint(key: Any) -> str:
    """SHA-256 of the SSH wire form of the key, URL-safe base64 without padding."""
    blob = base64.b64decode(_raw(key).split()[1])
    return base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidAttestationPayload(f"sshpop {what} is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidAttestationPayload(f"sshpop {what} must be a JSON object")
    return document


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidAttestationPayload(f"{what} must be base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAttestationPayload(f"{what} is not base64") from None


def parse_certificate(payload: bytes) -> ssh.SSHCertificate:
    text = _json(payload, "attestation data").get("certificate")
    if not isinstance(text, str) or len(text) > MAX_CERTIFICATE:
        raise InvalidAttestationPayload('sshpop attestation data must be {"certificate": "..."}')
    try:
        return ssh.load_ssh_public_identity(text.strip().encode())  # type: ignore[return-value]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidAttestationPayload(
            "sshpop certificate is not an OpenSSH certificate"
        ) from None


class SshPopServer(ServerAttestor):
    """Checks the host certificate against the tenant's SSH CAs, then a signed nonce."""

    type = ATTESTATION_TYPE
    can_reattest = True

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        require_keys(
            config,
            known={"cert_authorities", "canonical_domain"},
            required=frozenset({"cert_authorities"}),
        )
        authorities = string_list(config, "cert_authorities")
        if not authorities:
            raise InvalidAttestorConfig(
                "cert_authorities must list OpenSSH public keys", code="invalid_cert_authorities"
            )
        for text in authorities:
            try:
                ssh.load_ssh_public_key(text.encode())
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise InvalidAttestorConfig(
                    f"cert_authorities: {text[:40]!r} is not an OpenSSH public key",
                    code="invalid_cert_authorities",
                ) from None
        settings: dict[str, Any] = {"cert_authorities": authorities}
        domain = config.get("canonical_domain")
        if domain is not None:
            if not isinstance(domain, str) or not domain:
                raise InvalidAttestorConfig(
                    "canonical_domain must be a domain name", code="invalid_setting"
                )
            settings["canonical_domain"] = domain.lower().strip(".")
        return settings

    def _checked(self, payload: bytes) -> ssh.SSHCertificate:
        certificate = parse_certificate(payload)
        if certificate.type != ssh.SSHCertificateType.HOST:
            raise NodeAttestationFailed(
                "the certificate is not a host certificate", code="not_a_host_certificate"
            )
        signer = _raw(certificate.signature_key())
        trusted = {
            b" ".join(
                ssh.load_ssh_public_key(a.encode())
                .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                .split()[:2]
            )
            for a in self.config["cert_authorities"]
        }
        if b" ".join(signer.split()[:2]) not in trusted:
            raise NodeAttestationFailed(
                "the certificate is not signed by the tenant's SSH CA",
                code="untrusted_certificate",
            )
        try:
            certificate.verify_cert_signature()
        except InvalidSignature:
            raise NodeAttestationFailed(
                "the certificate's signature does not verify", code="untrusted_certificate"
            ) from None
        now = self.now().timestamp()
        skew = DEFAULT_CLOCK_SKEW.total_seconds()
        if certificate.valid_after - skew > now:
            raise NodeAttestationFailed(
                "the certificate is not valid yet", code="certificate_not_yet_valid"
            )
        if certificate.valid_before + skew < now:
            raise NodeAttestationFailed("the certificate has expired", code="certificate_expired")
        domain = self.config.get("canonical_domain")
        if domain and not any(
            p.decode().lower().endswith("." + domain) for p in certificate.valid_principals
        ):
            raise NodeAttestationFailed(
                f"no principal of the certificate is in {domain}", code="principal_not_allowed"
            )
        return certificate

    def challenge(self, payload: bytes) -> bytes:
        self._checked(payload)
        return json.dumps(
            {"nonce": base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode()}
        ).encode()

    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        certificate = self._checked(payload)
        if challenge is None or response is None:
            raise NodeAttestationFailed(
                "sshpop needs an answered challenge", code="challenge_missing"
            )
        nonce = _unb64(_json(challenge, "challenge").get("nonce"), "nonce")
        signature = _unb64(_json(response, "challenge response").get("signature"), "signature")
        if not _verify(certificate.public_key(), nonce, signature):
            raise NodeAttestationFailed(
                "the challenge signature does not verify with the host key",
                code="challenge_failed",
            )
        principals = sorted(p.decode() for p in certificate.valid_principals)
        return AttestedNode(
            agent_path=f"sshpop/{fingerprint(certificate.public_key())}",
            selectors=tuple(f"sshpop:principal:{p}" for p in principals if p),
            can_reattest=True,
            detail={"key_id": certificate.key_id.decode(errors="replace")[:200]},
        )


def _ecdsa_hash(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> Any:
    size = key.curve.key_size
    return hashes.SHA256() if size <= 256 else hashes.SHA384() if size <= 384 else hashes.SHA512()  # noqa: PLR2004


def _sign(key: Any, nonce: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(nonce)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(nonce, ec.ECDSA(_ecdsa_hash(key)))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(nonce, padding.PKCS1v15(), hashes.SHA256())
    raise InvalidAttestationPayload("sshpop supports Ed25519, ECDSA and RSA host keys")


def _verify(key: Any, nonce: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, nonce)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, nonce, ec.ECDSA(_ecdsa_hash(key)))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, nonce, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


class SshPopAgent(AgentAttestor):
    """The agent half: SPIRE's `host_key_path` and `host_cert_path`."""

    type = ATTESTATION_TYPE
    can_reattest = True

    def __init__(self, certificate: str, host_key: Any) -> None:
        self.certificate, self.host_key = certificate, host_key

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SshPopAgent:
        key_path = str(settings.get("host_key_path", DEFAULT_HOST_KEY))
        cert_path = str(settings.get("host_cert_path", key_path + "-cert.pub"))
        key = ssh.load_ssh_private_key(Path(key_path).read_bytes(), password=None)
        return cls(Path(cert_path).read_text(encoding="utf-8").strip(), key)

    def payload(self) -> bytes:
        return json.dumps({"certificate": self.certificate}).encode()

    def respond(self, challenge: bytes) -> bytes:
        nonce = _unb64(_json(challenge, "challenge").get("nonce"), "nonce")
        return json.dumps(
            {"signature": base64.b64encode(_sign(self.host_key, nonce)).decode()}
        ).encode()
