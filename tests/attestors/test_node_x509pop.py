"""x509pop's two halves, talking to each other as over the stream (no server needed)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from attestors.node import catalog
from attestors.node.base import InvalidAttestorConfig, NodeAttestationFailed
from attestors.node.x509pop import X509PopAgent, X509PopServer, fingerprint
from tests.fakes.pki import TestCA, bad_version_pem, pem

TD = "fleet.example"


class NoLookup:
    def redeem_join_token(self, secret: str):  # type: ignore[no-untyped-def]
        raise AssertionError("x509pop never redeems join tokens")

    def https(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("x509pop never calls out")


@pytest.fixture(scope="module")
def root() -> TestCA:
    return TestCA("fleet root")


def attest(server: X509PopServer, agent: X509PopAgent):  # type: ignore[no-untyped-def]
    payload = agent.payload()
    challenge = server.challenge(payload)
    return server.attest(
        payload, challenge=challenge, response=agent.respond(challenge), lookup=NoLookup()
    )


def test_agent_id_and_selectors_are_spires(root):
    # given a node certificate under an intermediate of the tenant's root
    intermediate = root.intermediate("fleet issuing CA")
    cert, key = intermediate.node("node-17.fleet.example", dns=("node-17.fleet.example",))
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)

    # when the agent proves possession of its key
    node = attest(server, X509PopAgent([cert, intermediate.cert], key))

    # then the ID is x509pop/<SHA-1 of the leaf> and the selectors name CN, SANs and CAs
    assert node.agent_path == f"x509pop/{fingerprint(cert)}"
    assert len(fingerprint(cert)) == 40
    assert {
        "x509pop:subject:cn:node-17.fleet.example",
        "x509pop:san:dns:node-17.fleet.example",
        f"x509pop:ca:fingerprint:{fingerprint(intermediate.cert)}",
        f"x509pop:ca:fingerprint:{fingerprint(root.cert)}",
        f"x509pop:serialnumber:{cert.serial_number:x}",
    } <= set(node.selectors)
    assert node.can_reattest


def test_agent_path_template(root):
    cert, key = root.node("edge-3")
    server = X509PopServer(
        {"ca_bundle_pem": pem(root.cert), "agent_path_template": "cn/{{ .Subject.CommonName }}"},
        trust_domain=TD,
    )
    assert attest(server, X509PopAgent([cert], key)).agent_path == "cn/edge-3"


def test_certificate_of_another_ca_is_refused_before_any_challenge(root):
    stranger = TestCA("someone else's root")
    cert, key = stranger.node("intruder")
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)
    with pytest.raises(NodeAttestationFailed) as refused:
        server.challenge(X509PopAgent([cert], key).payload())
    assert refused.value.code == "untrusted_certificate"


def test_a_certificate_without_its_key_cannot_answer(root):
    # given someone holding the node's certificate but another key
    cert, _ = root.node("node-1")
    _, other_key = root.node("node-2")
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server, X509PopAgent([cert], other_key))
    assert refused.value.code == "challenge_failed"


def test_a_recorded_answer_does_not_answer_a_new_challenge(root):
    # given a complete, recorded attestation
    cert, key = root.node("node-1")
    agent = X509PopAgent([cert], key)
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)
    payload = agent.payload()
    first = server.challenge(payload)
    recorded = agent.respond(first)
    server.attest(payload, challenge=first, response=recorded, lookup=NoLookup())

    # when the recording is replayed against the next challenge, it is refused
    second = server.challenge(payload)
    assert second != first
    with pytest.raises(NodeAttestationFailed) as refused:
        server.attest(payload, challenge=second, response=recorded, lookup=NoLookup())
    assert refused.value.code == "challenge_failed"


def test_expired_and_not_yet_valid_certificates_are_refused_beyond_the_skew(root):
    now = dt.datetime.now(dt.UTC)
    expired, key = root.node(
        "old", not_before=now - dt.timedelta(hours=2), not_after=now - dt.timedelta(minutes=5)
    )
    future, key2 = root.node("new", not_before=now + dt.timedelta(minutes=5))
    slightly, key3 = root.node("skewed", not_before=now + dt.timedelta(seconds=20))
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)
    for cert, k, code in (
        (expired, key, "certificate_expired"),
        (future, key2, "certificate_not_yet_valid"),
    ):
        with pytest.raises(NodeAttestationFailed) as refused:
            attest(server, X509PopAgent([cert], k))
        assert refused.value.code == code
    # a clock 20 s ahead of the server is tolerated
    assert attest(server, X509PopAgent([slightly], key3)).agent_path.startswith("x509pop/")


def test_leaf_without_digital_signature_usage_is_refused(root):
    cert, key = root.node("no-signing", key_usage_signature=False)
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server, X509PopAgent([cert], key))
    assert refused.value.code == "invalid_key_usage"


def test_a_ca_certificate_is_not_a_node(root):
    intermediate = root.intermediate("sub CA")
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server, X509PopAgent([intermediate.cert], intermediate.key))
    assert refused.value.code == "leaf_is_ca"


def test_no_answer_is_refused(root):
    cert, key = root.node("node-1")
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)
    with pytest.raises(NodeAttestationFailed) as refused:
        server.attest(
            X509PopAgent([cert], key).payload(), challenge=None, response=None, lookup=NoLookup()
        )
    assert refused.value.code == "challenge_missing"


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({}, "missing_setting"),
        ({"ca_bundle_pem": "not pem"}, "invalid_ca_bundle"),
        ({"ca_bundle_pem": 5}, "invalid_ca_bundle"),
        ({"ca_bundle_pem": "x", "ca_bundle_path": "/etc"}, "unknown_setting"),
    ],
)
def test_config_is_validated_with_stable_codes(config, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("x509pop", config)
    assert refused.value.code == code


def test_a_certificate_cryptography_cannot_load_is_an_invalid_bundle_not_a_crash(root):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("x509pop", {"ca_bundle_pem": bad_version_pem(root.cert)})
    assert refused.value.code == "invalid_ca_bundle"


def test_template_with_unknown_field_is_refused(root):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config(
            "x509pop", {"ca_bundle_pem": pem(root.cert), "agent_path_template": "{{ .Secret }}"}
        )
    assert refused.value.code == "invalid_agent_path_template"


def test_malformed_payload_is_invalid_data(root):
    server = X509PopServer({"ca_bundle_pem": pem(root.cert)}, trust_domain=TD)
    for payload in (b"not json", b"[]", json.dumps({"certificates": ["!!"]}).encode()):
        with pytest.raises(Exception) as refused:
            server.challenge(payload)
        assert getattr(refused.value, "code", "") == "invalid_attestation_data"
