"""x509pop: the node proves possession of the private key of a certificate from the tenant's CA.

Agent → server: `{"certificates": [<base64 DER>, ...]}` (leaf first, then intermediates).
Server → agent: `{"nonce": <base64 32 random bytes>}`.
Agent → server: `{"signature": <base64>}`, the leaf key's signature over the nonce (ECDSA with
SHA-256, or RSA-PSS with SHA-256). The nonce is fresh for every attestation, so a recorded
answer is worthless. The agent ID is SPIRE's `x509pop/<SHA-1 fingerprint of the leaf, hex>`
unless `agent_path_template` says otherwise; selectors as SPIRE's
(`x509pop:subject:cn:`, `x509pop:ca:fingerprint:`, `x509pop:san:dns:`, `x509pop:san:uri:`,
`x509pop:san:email:`, `x509pop:san:ip:`, `x509pop:serialnumber:`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from attestors.node import agentpath
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
from hallmark.bundle import load_pem_certificates
from hallmark.errors import InvalidBundle

ATTESTATION_TYPE = "x509pop"
DEFAULT_AGENT_PATH_TEMPLATE = "{{ .PluginName }}/{{ .Fingerprint }}"
NONCE_BYTES = 32
MAX_CHAIN = 8
MAX_BUNDLE_PEM = 256 * 1024
_TEMPLATE_FIELD = agentpath.DOTTED_FIELD
_TEMPLATE_FIELDS = {
    "PluginName",
    "TrustDomain",
    "Fingerprint",
    "SerialNumberHex",
    "Subject.CommonName",
    "Subject.SerialNumber",
}


def fingerprint(certificate: x509.Certificate) -> str:
    """SPIRE's fingerprint: SHA-1 of the DER certificate, lowercase hex."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidAttestationPayload(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAttestationPayload(f"{what} is not valid base64") from None


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidAttestationPayload(f"x509pop {what} is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidAttestationPayload(f"x509pop {what} must be a JSON object")
    return document


def parse_payload(payload: bytes) -> list[x509.Certificate]:
    """The certificate chain of an x509pop payload, leaf first."""
    ders = _json(payload, "attestation data").get("certificates")
    if not isinstance(ders, list) or not ders or len(ders) > MAX_CHAIN:
        raise InvalidAttestationPayload(
            f'x509pop attestation data must be {{"certificates": [...]}} with 1 to {MAX_CHAIN} '
            "base64 DER certificates, leaf first"
        )
    chain = []
    for der in ders:
        try:
            chain.append(x509.load_der_x509_certificate(_unb64(der, "certificate")))
        except ValueError:
            raise InvalidAttestationPayload("x509pop certificate is not DER X.509") from None
    return chain


def load_pem_bundle(pem: str) -> list[x509.Certificate]:
    try:
        return load_pem_certificates(pem.encode())
    except InvalidBundle:
        return []


def _check_template(template: str) -> None:
    for name in _TEMPLATE_FIELD.findall(template):
        if name not in _TEMPLATE_FIELDS:
            raise InvalidAttestorConfig(
                f"agent_path_template names {name!r}; known: {', '.join(sorted(_TEMPLATE_FIELDS))}",
                code="invalid_agent_path_template",
            )
    rest = _TEMPLATE_FIELD.sub("x", template)
    if "{{" in rest or "}}" in rest:
        raise InvalidAttestorConfig(
            "agent_path_template has a malformed {{ }} field", code="invalid_agent_path_template"
        )


def _render(template: str, values: Mapping[str, str]) -> str:
    return agentpath.render(template, values, field=_TEMPLATE_FIELD)


def _verify_signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.value.ca)


def verified_chain(
    chain: list[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    bundle: str,
) -> list[x509.Certificate]:
    """The path from the leaf (`chain[0]`, the rest its intermediates) to one of `roots`, the
    root last; NodeAttestationFailed for an expired, CA or unusable leaf, or no such path.
    `bundle` names the tenant's setting in the refusal."""
    skew = DEFAULT_CLOCK_SKEW
    for certificate in chain:
        if certificate.not_valid_before_utc - skew > now:
            raise NodeAttestationFailed(
                f"certificate {certificate.subject.rfc4514_string()} is not valid yet",
                code="certificate_not_yet_valid",
            )
        if certificate.not_valid_after_utc + skew < now:
            raise NodeAttestationFailed(
                f"certificate {certificate.subject.rfc4514_string()} has expired",
                code="certificate_expired",
            )
    leaf = chain[0]
    if _is_ca(leaf):
        raise NodeAttestationFailed("the leaf certificate is a CA", code="leaf_is_ca")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise NodeAttestationFailed(
                "the leaf certificate lacks the digitalSignature key usage",
                code="invalid_key_usage",
            )
    except x509.ExtensionNotFound:
        pass
    path, current, pool = [leaf], leaf, list(chain[1:])
    for _ in range(MAX_CHAIN):
        root = next((r for r in roots if _verify_signed_by(current, r)), None)
        if root is not None:
            return [*path, root]
        issuer = next((c for c in pool if _is_ca(c) and _verify_signed_by(current, c)), None)
        if issuer is None:
            break
        pool.remove(issuer)
        path.append(issuer)
        current = issuer
    raise NodeAttestationFailed(
        f"the certificate does not chain to the tenant's {bundle}",
        code="untrusted_certificate",
    )


class X509PopServer(ServerAttestor):
    """Checks the chain against `ca_bundle_pem`, then the signature over a fresh nonce."""

    type = ATTESTATION_TYPE
    can_reattest = True

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        require_keys(
            config,
            known={"ca_bundle_pem", "agent_path_template"},
            required=frozenset({"ca_bundle_pem"}),
        )
        pem = config["ca_bundle_pem"]
        if not isinstance(pem, str) or len(pem) > MAX_BUNDLE_PEM:
            raise InvalidAttestorConfig(
                "ca_bundle_pem must be a PEM string", code="invalid_ca_bundle"
            )
        roots = load_pem_bundle(pem)
        if not roots:
            raise InvalidAttestorConfig(
                "ca_bundle_pem holds no PEM certificate", code="invalid_ca_bundle"
            )
        template = config.get("agent_path_template", DEFAULT_AGENT_PATH_TEMPLATE)
        if not isinstance(template, str) or not template.strip():
            raise InvalidAttestorConfig(
                "agent_path_template must be a non-empty string",
                code="invalid_agent_path_template",
            )
        _check_template(template)
        return {"ca_bundle_pem": pem, "agent_path_template": template}

    @property
    def roots(self) -> list[x509.Certificate]:
        return load_pem_bundle(self.config["ca_bundle_pem"])

    def challenge(self, payload: bytes) -> bytes:
        self._verified_chain(parse_payload(payload))  # no challenge for a chain we refuse
        return json.dumps({"nonce": _b64(secrets.token_bytes(NONCE_BYTES))}).encode()

    def _verified_chain(self, chain: list[x509.Certificate]) -> list[x509.Certificate]:
        return verified_chain(chain, self.roots, now=self.now(), bundle="x509pop CA bundle")

    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        chain = parse_payload(payload)
        path = self._verified_chain(chain)
        if challenge is None or response is None:
            raise NodeAttestationFailed(
                "x509pop needs an answered challenge", code="challenge_missing"
            )
        nonce = _unb64(_json(challenge, "challenge").get("nonce"), "nonce")
        signature = _unb64(_json(response, "challenge response").get("signature"), "signature")
        if not verify_nonce_signature(chain[0], nonce, signature):
            raise NodeAttestationFailed(
                "the challenge signature does not verify with the certificate's key",
                code="challenge_failed",
            )
        leaf = chain[0]
        values = {
            "PluginName": ATTESTATION_TYPE,
            "TrustDomain": self.trust_domain,
            "Fingerprint": fingerprint(leaf),
            "SerialNumberHex": format(leaf.serial_number, "x"),
            "Subject.CommonName": _name(leaf.subject, NameOID.COMMON_NAME),
            "Subject.SerialNumber": _name(leaf.subject, NameOID.SERIAL_NUMBER),
        }
        return AttestedNode(
            agent_path=_render(self.config["agent_path_template"], values),
            selectors=tuple(sorted(selectors_of(leaf, path[1:]))),
            can_reattest=True,
            detail={"fingerprint": values["Fingerprint"]},
        )


def _name(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def selectors_of(leaf: x509.Certificate, issuers: Sequence[x509.Certificate]) -> set[str]:
    """SPIRE's x509pop selectors (without the `x509pop:` prefix's type, added here)."""
    found = {f"x509pop:serialnumber:{format(leaf.serial_number, 'x')}"}
    cn = _name(leaf.subject, NameOID.COMMON_NAME)
    if cn:
        found.add(f"x509pop:subject:cn:{cn}")
    for issuer in issuers:
        found.add(f"x509pop:ca:fingerprint:{fingerprint(issuer)}")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return found
    found.update(f"x509pop:san:dns:{v}" for v in san.get_values_for_type(x509.DNSName))
    found.update(
        f"x509pop:san:uri:{v}" for v in san.get_values_for_type(x509.UniformResourceIdentifier)
    )
    found.update(f"x509pop:san:email:{v}" for v in san.get_values_for_type(x509.RFC822Name))
    found.update(f"x509pop:san:ip:{v}" for v in san.get_values_for_type(x509.IPAddress))
    return found


def sign_nonce(key: Any, nonce: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(nonce, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(
            nonce,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
    raise InvalidAttestationPayload("x509pop supports EC and RSA keys")


def verify_nonce_signature(leaf: x509.Certificate, nonce: bytes, signature: bytes) -> bool:
    key = leaf.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(
                signature,
                nonce,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                hashes.SHA256(),
            )
        else:
            return False
    except InvalidSignature:
        return False
    return True


class X509PopAgent(AgentAttestor):
    """The agent half: SPIRE's `certificate_path`, `private_key_path`, `intermediates_path`."""

    type = ATTESTATION_TYPE
    can_reattest = True

    def __init__(
        self,
        certificates: Sequence[x509.Certificate],
        private_key: Any,
    ) -> None:
        self.certificates = list(certificates)
        self.private_key = private_key

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> X509PopAgent:
        cert_path, key_path = settings.get("certificate_path"), settings.get("private_key_path")
        if not isinstance(cert_path, str) or not isinstance(key_path, str):
            raise InvalidAttestorConfig(
                "[node_attestor.x509pop] needs certificate_path and private_key_path",
                code="missing_setting",
            )
        chain = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
        intermediates = settings.get("intermediates_path")
        if isinstance(intermediates, str) and intermediates:
            chain += x509.load_pem_x509_certificates(Path(intermediates).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        return cls(chain, key)

    def payload(self) -> bytes:
        ders = [c.public_bytes(serialization.Encoding.DER) for c in self.certificates]
        return json.dumps({"certificates": [_b64(d) for d in ders]}).encode()

    def respond(self, challenge: bytes) -> bytes:
        nonce = _unb64(_json(challenge, "challenge").get("nonce"), "nonce")
        return json.dumps({"signature": _b64(sign_nonce(self.private_key, nonce))}).encode()
