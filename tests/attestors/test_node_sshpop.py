"""sshpop's two halves with real OpenSSH host certificates (cryptography's builder)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import ssh

from attestors.node import catalog
from attestors.node.base import InvalidAttestorConfig, NodeAttestationFailed
from attestors.node.sshpop import SshPopAgent, SshPopServer, fingerprint


def openssh(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def host_certificate(
    ca: Any,
    host_key: Any,
    *,
    principals: tuple[str, ...] = ("web-1.fleet.example",),
    kind: ssh.SSHCertificateType = ssh.SSHCertificateType.HOST,
    valid_after: int | None = None,
    valid_before: int | None = None,
) -> str:
    now = int(time.time())
    certificate = (
        ssh.SSHCertificateBuilder()
        .public_key(host_key.public_key())
        .serial(1)
        .type(kind)
        .key_id(b"web-1")
        .valid_principals([p.encode() for p in principals])
        .valid_after(valid_after if valid_after is not None else now - 60)
        .valid_before(valid_before if valid_before is not None else now + 3600)
        .sign(ca)
    )
    return certificate.public_bytes().decode()


def server(ca: Any, **config: Any) -> SshPopServer:
    return SshPopServer({"cert_authorities": [openssh(ca)], **config}, trust_domain="ssh.example")


def attest(srv: SshPopServer, agent: SshPopAgent) -> Any:
    payload = agent.payload()
    challenge = srv.challenge(payload)
    return srv.attest(payload, challenge=challenge, response=agent.respond(challenge), lookup=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make_key",
    [ed25519.Ed25519PrivateKey.generate, lambda: ec.generate_private_key(ec.SECP256R1())],
)
def test_host_certificate_with_its_key_attests(make_key):
    ca, host = ed25519.Ed25519PrivateKey.generate(), make_key()
    node = attest(server(ca), SshPopAgent(host_certificate(ca, host), host))
    assert node.agent_path == f"sshpop/{fingerprint(host.public_key())}"
    assert node.selectors == ("sshpop:principal:web-1.fleet.example",)


def test_certificate_without_its_key_cannot_answer():
    ca, host, thief = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server(ca), SshPopAgent(host_certificate(ca, host), thief))
    assert refused.value.code == "challenge_failed"


def test_certificate_of_another_ca_or_a_user_certificate_is_refused():
    ca, other, host = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    for certificate, code in (
        (host_certificate(other, host), "untrusted_certificate"),
        (host_certificate(ca, host, kind=ssh.SSHCertificateType.USER), "not_a_host_certificate"),
    ):
        with pytest.raises(NodeAttestationFailed) as refused:
            server(ca).challenge(SshPopAgent(certificate, host).payload())
        assert refused.value.code == code


def test_expired_certificate_and_foreign_domain_are_refused():
    ca, host = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    now = int(time.time())
    expired = host_certificate(ca, host, valid_after=now - 7200, valid_before=now - 600)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server(ca), SshPopAgent(expired, host))
    assert refused.value.code == "certificate_expired"
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(
            server(ca, canonical_domain="other.example"),
            SshPopAgent(host_certificate(ca, host), host),
        )
    assert refused.value.code == "principal_not_allowed"


def test_a_recorded_answer_does_not_answer_a_new_challenge():
    ca, host = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    srv, agent = server(ca), SshPopAgent(host_certificate(ca, host), host)
    payload = agent.payload()
    recorded = agent.respond(srv.challenge(payload))
    with pytest.raises(NodeAttestationFailed) as refused:
        srv.attest(payload, challenge=srv.challenge(payload), response=recorded, lookup=None)  # type: ignore[arg-type]
    assert refused.value.code == "challenge_failed"


def test_agent_half_reads_spires_files(tmp_path):
    ca, host = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "ssh_host_ed25519_key"
    key_path.write_bytes(
        host.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "ssh_host_ed25519_key-cert.pub").write_text(host_certificate(ca, host) + "\n")
    agent = catalog.agent_attestor("sshpop", {"host_key_path": str(key_path)})
    assert attest(server(ca), agent).agent_path.startswith("sshpop/")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({}, "missing_setting"),
        ({"cert_authorities": []}, "invalid_cert_authorities"),
        ({"cert_authorities": ["not a key"]}, "invalid_cert_authorities"),
    ],
)
def test_config_is_validated_with_stable_codes(config, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("sshpop", config)
    assert refused.value.code == code
