"""tpm_devid's two halves against a real TPM (swtpm), talking as over the stream.

One swtpm for the module: a test manufacturer CA certified its EK, a test fleet CA (under a
root, through an intermediate) certified a DevID key made in it. Every TPM conversation
costs about a second of tpm2-tools, so the tests share the few they need.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestors.node import catalog
from attestors.node.base import (
    InvalidAttestationPayload,
    InvalidAttestorConfig,
    NodeAttestationFailed,
)
from attestors.node.tpm_devid import (
    TpmDevidAgent,
    TpmDevidServer,
    TpmError,
    parse_public,
)
from attestors.node.x509pop import fingerprint
from tests.fakes.pki import TestCA, pem
from tests.fakes.swtpm import Swtpm

TD = "fleet.example"


class NoLookup:
    def redeem_join_token(self, secret: str):  # type: ignore[no-untyped-def]
        raise AssertionError("tpm_devid never redeems join tokens")

    def https(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("tpm_devid never calls out")


class Fleet:
    """The module's TPM, its makers' CA, the fleet's DevID CAs and one recorded attestation."""

    def __init__(self, tmp: Path) -> None:
        self.manufacturer = TestCA("tpm maker root")
        self.root = TestCA("fleet A devid root")
        self.issuing = self.root.intermediate("fleet A devid issuing")
        self.tpm = Swtpm(tmp / "swtpm").start()
        try:
            self.tpm.provision_ek_certificate(self.manufacturer, tmp / "maker")
            self.settings = self.tpm.provision_devid(
                self.issuing, "node-7.fleet.example", tmp / "devid", password="devid-secret"
            )
            self.agent = catalog.agent_attestor("tpm_devid", self.settings)
            self.server = self.server_for(self.root)
            # one full conversation with the TPM, recorded for the tests that replay or tamper
            self.payload = self.agent.payload()
            self.challenge = self.server.challenge(self.payload)
            self.response = self.agent.respond(self.challenge)
        except BaseException:
            self.tpm.stop()
            raise

    def server_for(self, devid_root: TestCA, maker: TestCA | None = None) -> TpmDevidServer:
        config = {
            "devid_ca_pem": pem(devid_root.cert),
            "endorsement_ca_pem": pem((maker or self.manufacturer).cert),
        }
        server = catalog.server_attestor_class("tpm_devid")(config, trust_domain=TD)
        assert isinstance(server, TpmDevidServer)
        return server


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    made = Fleet(tmp_path_factory.mktemp("tpm_devid"))
    yield made
    made.tpm.stop()


def edited(document: bytes, **changes: Any) -> bytes:
    values = json.loads(document)
    values.update(changes)
    return json.dumps(values).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(document: bytes, name: str) -> bytes:
    return base64.b64decode(json.loads(document)[name])


def refusal(server: TpmDevidServer, payload: bytes, challenge: bytes, response: bytes) -> str:
    with pytest.raises(NodeAttestationFailed) as refused:
        server.attest(payload, challenge=challenge, response=response, lookup=NoLookup())
    return refused.value.code


def test_a_devid_in_a_genuine_tpm_attests_with_spires_id_and_selectors(fleet):
    # given the recorded conversation: DevID chain, EK certificate, AK certification,
    # and the TPM's answers (nonce signed by the DevID key, credential activated)
    node = fleet.server.attest(
        fleet.payload, challenge=fleet.challenge, response=fleet.response, lookup=NoLookup()
    )

    # then the ID is SPIRE's tpm_devid/<SHA-1 of the DevID certificate> with its selectors
    leaf = x509.load_pem_x509_certificates(Path(fleet.settings["devid_cert_path"]).read_bytes())[0]
    assert node.agent_path == f"tpm_devid/{fingerprint(leaf)}"
    assert set(node.selectors) == {
        "tpm_devid:subject:cn:node-7.fleet.example",
        "tpm_devid:issuer:cn:fleet A devid issuing",
        f"tpm_devid:ca:fingerprint:{fingerprint(fleet.issuing.cert)}",
        f"tpm_devid:ca:fingerprint:{fingerprint(fleet.root.cert)}",
    }
    assert node.can_reattest
    assert node.detail["ek_certificate_fingerprint"]


def test_a_devid_of_another_ca_or_tenant_is_refused_before_any_challenge(fleet):
    # given tenant B trusts its own DevID CA, and the same TPM makers
    tenant_b = fleet.server_for(TestCA("fleet B devid root"))

    # when A's node attests there, then the chain is refused before any challenge
    with pytest.raises(NodeAttestationFailed) as refused:
        tenant_b.challenge(fleet.payload)
    assert refused.value.code == "untrusted_certificate"
    assert "tpm_devid DevID CA bundle" in refused.value.detail
    # and a challenge A's server made does not make B's server accept the answer
    assert refusal(tenant_b, fleet.payload, fleet.challenge, fleet.response) == (
        "untrusted_certificate"
    )


def test_a_tpm_of_an_untrusted_maker_is_refused(fleet):
    server = fleet.server_for(fleet.root, maker=TestCA("some other maker"))
    with pytest.raises(NodeAttestationFailed) as refused:
        server.challenge(fleet.payload)
    assert refused.value.code == "untrusted_endorsement_certificate"


def test_a_forged_proof_of_possession_is_refused(fleet):
    # given someone holding the DevID certificate and the TPM evidence, not the DevID key
    nonce = unb64(fleet.challenge, "devid_nonce")
    forged = ec.generate_private_key(ec.SECP256R1()).sign(nonce, ec.ECDSA(hashes.SHA256()))
    response = edited(fleet.response, devid_signature=b64(forged))
    assert refusal(fleet.server, fleet.payload, fleet.challenge, response) == "challenge_failed"


def test_an_ak_not_in_the_tpm_of_the_ek_cannot_activate_the_credential(fleet):
    # given evidence claiming another TPM's EK (a genuine maker certificate for a key
    # this TPM does not hold) beside this TPM's AK and DevID
    other_ek = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ek_blob = unb64(fleet.payload, "ek_public")
    modulus = other_ek.public_numbers().n.to_bytes(256)
    other_blob = ek_blob[: -len(modulus)] + modulus
    assert parse_public(other_blob, "ek").key.public_numbers() == other_ek.public_numbers()
    payload = edited(
        fleet.payload,
        ek_public=b64(other_blob),
        ek_certificate=b64(
            fleet.manufacturer.issue("other tpm ek", other_ek).public_bytes(
                serialization.Encoding.DER
            )
        ),
    )
    challenge = fleet.server.challenge(payload)

    # when the agent's TPM is asked to activate it, it refuses (wrong EK)
    fleet.agent.payload()
    with pytest.raises(TpmError) as tpm_refused:
        fleet.agent.respond(challenge)
    assert "tpm2_activatecredential" in tpm_refused.value.detail

    # and an answer with a valid DevID signature but any other secret is refused
    mixed = edited(challenge, devid_nonce=json.loads(fleet.challenge)["devid_nonce"])
    assert refusal(fleet.server, payload, mixed, fleet.response) == "credential_activation_failed"


def test_a_recorded_answer_does_not_answer_a_new_challenge(fleet):
    fresh = fleet.server.challenge(fleet.payload)
    assert json.loads(fresh)["devid_nonce"] != json.loads(fleet.challenge)["devid_nonce"]
    assert refusal(fleet.server, fleet.payload, fresh, fleet.response) == "challenge_failed"
    # with a valid signature over the new nonce, the old activated secret still fails
    replayed = edited(fresh, devid_nonce=json.loads(fleet.challenge)["devid_nonce"])
    assert refusal(fleet.server, fleet.payload, replayed, fleet.response) == (
        "credential_activation_failed"
    )


def test_no_answer_is_refused(fleet):
    assert refusal(fleet.server, fleet.payload, fleet.challenge, None) == "challenge_missing"  # type: ignore[arg-type]


def _flip_attribute(blob: bytes, bit: int) -> bytes:
    # TPM2B_PUBLIC: size (2), type (2), nameAlg (2), objectAttributes (4)
    attributes = int.from_bytes(blob[6:10]) ^ (1 << bit)
    return blob[:6] + attributes.to_bytes(4) + blob[10:]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        # an AK that could sign anything (not restricted) could forge the certification
        (lambda p: {"ak_public": b64(_flip_attribute(unb64(p, "ak_public"), 16))},
         "invalid_attestation_key"),
        # the TPM key certified is not the DevID certificate's key
        (lambda p: {"devid_public": json.loads(p)["ak_public"]}, "devid_key_mismatch"),
        # a DevID key that may leave its TPM
        (lambda p: {"devid_public": b64(_flip_attribute(unb64(p, "devid_public"), 1))},
         "invalid_devid_key"),
        # the certification was not signed by the AK
        (lambda p: {"certify_signature": b64(b"\x30\x06\x02\x01\x01\x02\x01\x01")},
         "certification_failed"),
        # the EK certificate is not for the EK
        (lambda p: {"ek_certificate": b64(TestCA("x").cert.public_bytes(serialization.Encoding.DER))},
         "untrusted_endorsement_certificate"),
    ],
)  # fmt: skip
def test_tampered_tpm_evidence_is_refused(fleet, change, code):
    payload = edited(fleet.payload, **change(fleet.payload))
    with pytest.raises(NodeAttestationFailed) as refused:
        fleet.server.challenge(payload)
    assert refused.value.code == code


def test_a_software_devid_key_beside_a_tpm_certification_is_refused(fleet):
    # given a DevID key held in software, certified by the fleet CA, presented as a TPM key
    # (its point in the TPM public area) beside the AK's certification of the TPM's DevID
    soft = ec.generate_private_key(ec.SECP256R1())
    numbers = soft.public_key().public_numbers()
    point = b"".join(
        len(v).to_bytes(2) + v for v in (numbers.x.to_bytes(32), numbers.y.to_bytes(32))
    )
    blob = unb64(fleet.payload, "devid_public")
    certificate = fleet.issuing.issue("node-7.fleet.example", soft.public_key())
    payload = edited(
        fleet.payload,
        devid_public=b64(blob[: -len(point)] + point),
        devid_certificates=[
            b64(c.public_bytes(serialization.Encoding.DER))
            for c in (certificate, fleet.issuing.cert)
        ],
    )
    with pytest.raises(NodeAttestationFailed) as refused:
        fleet.server.challenge(payload)
    assert refused.value.code == "certification_failed"


def test_an_ek_certificate_for_another_key_is_refused(fleet):
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = fleet.manufacturer.issue("tpm ek", other).public_bytes(serialization.Encoding.DER)
    with pytest.raises(NodeAttestationFailed) as refused:
        fleet.server.challenge(edited(fleet.payload, ek_certificate=b64(der)))
    assert refused.value.code == "endorsement_key_mismatch"


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({}, "missing_setting"),
        ({"devid_ca_pem": "x"}, "missing_setting"),
        ({"devid_ca_pem": "nope", "endorsement_ca_pem": "nope"}, "invalid_ca_bundle"),
        ({"devid_ca_pem": 3, "endorsement_ca_pem": None}, "invalid_ca_bundle"),
        ({"devid_ca_path": "/etc/x"}, "unknown_setting"),
    ],
)
def test_config_is_validated_with_stable_codes(config, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("tpm_devid", config)
    assert refused.value.code == code


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'{"devid_certificates": []}', b'{"devid_certificates": ["@@"]}'],
)
def test_malformed_payload_is_invalid_data(fleet, payload):
    with pytest.raises(InvalidAttestationPayload):
        fleet.server.challenge(payload)


def test_truncated_tpm_structures_are_invalid_data(fleet):
    blob = unb64(fleet.payload, "ak_public")
    with pytest.raises(InvalidAttestationPayload):
        fleet.server.challenge(edited(fleet.payload, ak_public=b64(blob[:-5])))


def test_an_oversized_rsa_key_is_invalid_data(fleet):
    # an EK public area whose modulus is 8192 bits: refused before any RSA work
    blob = unb64(fleet.payload, "ek_public")
    huge = (1 << 8191 | 1).to_bytes(1024)
    area = blob[2:-258] + len(huge).to_bytes(2) + huge
    with pytest.raises(InvalidAttestationPayload) as refused:
        fleet.server.challenge(edited(fleet.payload, ek_public=b64(len(area).to_bytes(2) + area)))
    assert "2048 to 4096 bits" in refused.value.detail


def test_agent_settings_are_checked(tmp_path):
    with pytest.raises(InvalidAttestorConfig) as missing:
        TpmDevidAgent.from_settings({"devid_cert_path": "x"})
    assert missing.value.code == "missing_setting"
    with pytest.raises(InvalidAttestorConfig) as unsupported:
        TpmDevidAgent.from_settings(
            {
                "devid_cert_path": "a",
                "devid_pub_path": "b",
                "devid_priv_path": "c",
                "owner_hierarchy_password": "x",
            }
        )
    assert unsupported.value.code == "unsupported_setting"
