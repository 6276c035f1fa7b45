"""aws_iid: the agent half reads a fake IMDSv2; the server half checks what it sent."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error

import pytest
from cryptography import x509

from attestors.node import catalog
from attestors.node.aws_iid import AwsIidAgent, AwsIidServer
from attestors.node.base import InvalidAttestorConfig, NodeAttestationFailed
from tests.fakes.aws import AwsSigner, FakeImds, instance_document
from tests.fakes.pki import bad_version_pem

ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def signer() -> AwsSigner:
    return AwsSigner()


def server(signer: AwsSigner, **config: object) -> AwsIidServer:
    settings = {"aws_certificates_pem": signer.pem, "account_allow_list": [ACCOUNT]}
    settings.update(config)
    return AwsIidServer(settings, trust_domain="aws.example")


def attest(srv: AwsIidServer, payload: bytes):  # type: ignore[no-untyped-def]
    return srv.attest(payload, challenge=None, response=None, lookup=None)  # type: ignore[arg-type]


def test_imdsv2_document_gives_spires_agent_id_and_selectors(signer):
    document = instance_document()
    imds = FakeImds(signer, document).start()
    try:
        payload = AwsIidAgent(imds.url).payload()
    finally:
        imds.stop()
    node = attest(server(signer), payload)
    instance = json.loads(document)["instanceId"]
    assert node.agent_path == f"aws_iid/{ACCOUNT}/us-west-2/{instance}"
    assert set(node.selectors) == {
        f"aws_iid:instance:id:{instance}",
        "aws_iid:region:us-west-2",
        "aws_iid:az:us-west-2b",
        "aws_iid:image:id:ami-0abcdef1234567890",
    }
    assert not node.can_reattest


def test_imds_without_a_session_token_refuses(signer):
    imds = FakeImds(signer, instance_document()).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{imds.url}/latest/dynamic/instance-identity/document")  # noqa: S310
        assert refused.value.code == 401
    finally:
        imds.stop()


def test_edited_document_is_refused(signer):
    document = instance_document()
    forged = document.replace(ACCOUNT, "999999999999")
    payload = json.dumps({"document": forged, "signature": signer.sign(document)}).encode()
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server(signer, account_allow_list=[ACCOUNT, "999999999999"]), payload)
    assert refused.value.code == "invalid_signature"


def test_document_signed_by_another_key_is_refused(signer):
    document = instance_document()
    payload = json.dumps({"document": document, "signature": AwsSigner().sign(document)}).encode()
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server(signer), payload)
    assert refused.value.code == "invalid_signature"


def test_account_outside_the_allow_list_is_refused(signer):
    document = instance_document(account="210987654321")
    payload = json.dumps({"document": document, "signature": signer.sign(document)}).encode()
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server(signer), payload)
    assert refused.value.code == "account_not_allowed"


def test_document_from_the_future_is_refused_beyond_the_skew(signer):
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = instance_document(pendingTime=ahead)
    payload = json.dumps({"document": document, "signature": signer.sign(document)}).encode()
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(server(signer), payload)
    assert refused.value.code == "document_not_yet_valid"
    slightly = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = instance_document(pendingTime=slightly)
    payload = json.dumps({"document": document, "signature": signer.sign(document)}).encode()
    assert attest(server(signer), payload).agent_path.startswith("aws_iid/")


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"account_allow_list": [ACCOUNT]}, "missing_setting"),
        (
            {"aws_certificates_pem": "x", "account_allow_list": [ACCOUNT]},
            "invalid_aws_certificates",
        ),
        ({"aws_certificates_pem": None, "account_allow_list": ["12"]}, "invalid_aws_certificates"),
    ],
)
def test_config_is_validated_with_stable_codes(config, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("aws_iid", config)
    assert refused.value.code == code


def test_a_certificate_cryptography_cannot_load_is_refused_not_a_crash(signer):
    bad = bad_version_pem(x509.load_pem_x509_certificate(signer.pem.encode()))
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config(
            "aws_iid", {"aws_certificates_pem": bad, "account_allow_list": [ACCOUNT]}
        )
    assert refused.value.code == "invalid_aws_certificates"


def test_account_allow_list_must_be_account_ids(signer):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config(
            "aws_iid", {"aws_certificates_pem": signer.pem, "account_allow_list": ["prod"]}
        )
    assert refused.value.code == "invalid_account_allow_list"
