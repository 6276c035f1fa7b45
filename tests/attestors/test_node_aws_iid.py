"""aws_iid: the agent half reads a fake IMDSv2; the server half checks what it sent."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from attestors.node import awsapi, catalog
from attestors.node.aws_iid import AwsIidAgent, AwsIidServer
from attestors.node.base import InvalidAttestorConfig, NodeAttestationFailed
from issuance.services.node_attestors import ALLOWED_NETWORKS_ENV, TenantLookup
from tests.fakes.aws import AwsSigner, FakeAwsApi, FakeImds, instance_document
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


# -- SPIRE's selectors from the AWS API, with the tenant's credentials -------------------------
@pytest.fixture(scope="module")
def aws() -> Iterator[FakeAwsApi]:
    fake = FakeAwsApi().start()
    fake.profiles["web-profile"] = [f"arn:aws:iam::{ACCOUNT}:role/web-node"]
    yield fake
    fake.stop()


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "127.0.0.0/8")


def api_settings(aws: FakeAwsApi, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "access_key_id": aws.access_key_id,
        "secret_access_key": aws.secret_access_key,
        "ec2_endpoint_url": aws.url,
        "iam_endpoint_url": aws.url,
        "ca_bundle_pem": aws.ca_pem,
    }
    settings.update(extra)
    return settings


def signed(signer: AwsSigner, document: str) -> bytes:
    return json.dumps({"document": document, "signature": signer.sign(document)}).encode()


def attest_via_api(srv: AwsIidServer, payload: bytes):  # type: ignore[no-untyped-def]
    return srv.attest(payload, challenge=None, response=None, lookup=TenantLookup())


def web_instance(aws: FakeAwsApi, **record: Any) -> tuple[str, str]:
    document = instance_document()
    aws.add(
        document,
        **{
            "tags": {"Name": "web-1", "env": "prod"},
            "security_groups": [("sg-0a1b2c3d4e5f60718", "web")],
            "instance_profile": "web-profile",
            **record,
        },
    )
    return document, json.loads(document)["instanceId"]


@pytest.mark.usefixtures("loopback_allowed")
def test_credentials_add_spires_tag_security_group_and_iam_role_selectors(signer, aws):
    document, instance = web_instance(aws)
    node = attest_via_api(server(signer, **api_settings(aws)), signed(signer, document))
    assert set(node.selectors) == {
        f"aws_iid:instance:id:{instance}",
        "aws_iid:region:us-west-2",
        "aws_iid:az:us-west-2b",
        "aws_iid:image:id:ami-0abcdef1234567890",
        "aws_iid:tag:Name:web-1",
        "aws_iid:tag:env:prod",
        "aws_iid:sg:id:sg-0a1b2c3d4e5f60718",
        "aws_iid:sg:name:web",
        f"aws_iid:iamrole:arn:aws:iam::{ACCOUNT}:role/web-node",
    }
    assert ("DescribeInstances", instance) in aws.calls
    assert ("GetInstanceProfile", "web-profile") in aws.calls


@pytest.mark.usefixtures("loopback_allowed")
def test_instance_profile_selectors_can_be_turned_off(signer, aws):
    document, instance = web_instance(aws)
    srv = server(signer, **api_settings(aws, disable_instance_profile_selectors=True))
    before = len(aws.calls)
    node = attest_via_api(srv, signed(signer, document))
    assert "aws_iid:tag:Name:web-1" in node.selectors
    assert not any(s.startswith("aws_iid:iamrole:") for s in node.selectors)
    assert aws.calls[before:] == [("DescribeInstances", instance)]


@pytest.mark.usefixtures("loopback_allowed")
def test_a_wrong_secret_is_refused_by_aws_and_refuses_the_attestation(signer, aws):
    document, _ = web_instance(aws)
    wrong = api_settings(aws, secret_access_key=aws.secret_access_key[:-2] + "xx")
    with pytest.raises(NodeAttestationFailed) as refused:
        attest_via_api(server(signer, **wrong), signed(signer, document))
    assert refused.value.code == "aws_api_denied"
    assert "AuthFailure" in str(refused.value)


@pytest.mark.usefixtures("loopback_allowed")
def test_iam_refusal_refuses_the_attestation_rather_than_dropping_the_role(signer, aws):
    document, _ = web_instance(aws, instance_profile="deleted-profile")
    with pytest.raises(NodeAttestationFailed) as refused:
        attest_via_api(server(signer, **api_settings(aws)), signed(signer, document))
    assert refused.value.code == "aws_api_denied"
    assert "NoSuchEntity" in str(refused.value)


@pytest.mark.usefixtures("loopback_allowed")
@pytest.mark.parametrize("case", ["unknown", "stopped", "other_region"])
def test_an_instance_ec2_does_not_know_as_running_is_refused(signer, aws, case):
    document = instance_document()
    if case == "stopped":
        aws.add(document, state="stopped")
    if case == "other_region":  # the same ID known in another region only
        aws.add(
            instance_document(instanceId=json.loads(document)["instanceId"], region="eu-west-1")
        )
    with pytest.raises(NodeAttestationFailed) as refused:
        attest_via_api(server(signer, **api_settings(aws)), signed(signer, document))
    assert refused.value.code == "instance_not_found"


@pytest.mark.usefixtures("loopback_allowed")
def test_a_root_volume_attached_after_launch_is_refused_unless_skipped(signer, aws):
    document, _ = web_instance(aws, root_attached_after=3600)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest_via_api(server(signer, **api_settings(aws)), signed(signer, document))
    assert refused.value.code == "root_device_check_failed"
    srv = server(signer, **api_settings(aws, skip_block_device=True))
    assert "aws_iid:tag:env:prod" in attest_via_api(srv, signed(signer, document)).selectors
    document, _ = web_instance(aws, root_device_type="instance-store")
    assert attest_via_api(server(signer, **api_settings(aws)), signed(signer, document))


@pytest.mark.usefixtures("loopback_allowed")
def test_an_unreachable_aws_api_refuses_the_attestation(signer, aws):
    import socket

    document, _ = web_instance(aws)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(NodeAttestationFailed) as refused:
        attest_via_api(
            server(signer, **api_settings(aws, ec2_endpoint_url=closed)), signed(signer, document)
        )
    assert refused.value.code == "attestor_unreachable"


def test_loopback_aws_endpoint_is_refused_unless_allowed(signer, aws, monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "")
    document, _ = web_instance(aws)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest_via_api(server(signer, **api_settings(aws)), signed(signer, document))
    assert refused.value.code == "attestor_unreachable"


@pytest.mark.usefixtures("loopback_allowed")
def test_two_tenants_configs_judge_the_same_instance_each_by_their_own(signer, aws):
    # A has credentials, B none (no AWS call, the document's selectors), C a foreign key
    document, _ = web_instance(aws)
    before = len(aws.calls)
    b = attest(server(signer), signed(signer, document))
    assert aws.calls[before:] == []
    assert not any(":tag:" in s for s in b.selectors)
    a = attest_via_api(server(signer, **api_settings(aws)), signed(signer, document))
    assert "aws_iid:tag:Name:web-1" in a.selectors
    foreign = api_settings(aws, access_key_id="AKIAFOREIGNTENANT000")
    with pytest.raises(NodeAttestationFailed) as refused:
        attest_via_api(server(signer, **foreign), signed(signer, document))
    assert refused.value.code == "aws_api_denied"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"access_key_id": "AKIAIOSFODNN7EXAMPLE"}, "missing_setting"),
        ({"secret_access_key": "s"}, "missing_setting"),
        ({"skip_block_device": True}, "missing_setting"),
        ({"ec2_endpoint_url": "https://ec2.example"}, "missing_setting"),
        ({"access_key_id": "not a key", "secret_access_key": "s"}, "invalid_setting"),
        ({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": ""}, "invalid_setting"),
        (
            {
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "s",
                "skip_block_device": "yes",
            },
            "invalid_setting",
        ),
        (
            {
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "s",
                "ec2_endpoint_url": "http://ec2.example",
            },
            "invalid_url",
        ),
        (
            {
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "s",
                "iam_endpoint_url": "https://iam.example/?a=b",
            },
            "invalid_url",
        ),
        (
            {
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "s",
                "ca_bundle_pem": "nope",
            },
            "invalid_ca_bundle",
        ),
    ],
)
def test_aws_api_settings_are_validated_with_stable_codes(signer, extra, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config(
            "aws_iid",
            {"aws_certificates_pem": signer.pem, "account_allow_list": [ACCOUNT], **extra},
        )
    assert refused.value.code == code


def test_aws_api_settings_get_spires_defaults(signer):
    config = catalog.validate_config(
        "aws_iid",
        {
            "aws_certificates_pem": signer.pem,
            "account_allow_list": [ACCOUNT],
            "access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        },
    )
    assert config["skip_block_device"] is False
    assert config["disable_instance_profile_selectors"] is False
    assert config["ec2_endpoint_url"] == "https://ec2.{region}.amazonaws.com"
    assert config["iam_endpoint_url"] == "https://iam.amazonaws.com"


# AWS's published Signature Version 4 test suite (credentials AKIDEXAMPLE, 2015-08-30).
SUITE = awsapi.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_TIME = dt.datetime(2015, 8, 30, 12, 36, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("method", "url", "signature"),
    [
        (
            "GET",
            "https://example.amazonaws.com/",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "POST",
            "https://example.amazonaws.com/",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
    ],
)
def test_sigv4_matches_the_aws_test_suite(method, url, signature):
    headers = awsapi.signature_headers(
        method,
        url,
        headers={},
        body=b"",
        region="us-east-1",
        service="service",
        credentials=SUITE,
        now=SUITE_TIME,
    )
    assert headers["X-Amz-Date"] == "20150830T123600Z"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}"
    )
