"""aws_iid: the node proves itself with its EC2 instance identity document and signature.

Agent: reads the document and its signature from the instance metadata service with IMDSv2
(`PUT /latest/api/token`, then `GET /latest/dynamic/instance-identity/document` and
`.../signature` with the token) and sends `{"document": ..., "signature": ...}`.
Server: verifies the RSA-SHA256 signature with the AWS public certificates the tenant
configured (`aws_certificates_pem`, AWS publishes one per region), the account against
`account_allow_list`, and the document's time against the clock (with skew). The agent ID is
SPIRE's `aws_iid/<account>/<region>/<instance id>` (`agent_path_template` may change it);
selectors are those SPIRE reads from the document, without calling AWS APIs:
`aws_iid:az:`, `aws_iid:image:id:`, `aws_iid:instance:id:`, `aws_iid:region:`.
As in SPIRE, an instance attests once (trust on first use): a document shown again, by the
instance or by whoever copied it, binds to the agent already attested and is refused.

With AWS credentials in the tenant's config (`access_key_id`, `secret_access_key`), the server
half also asks AWS, as SPIRE's does: EC2 DescribeInstances (pending or running instances only)
gives `aws_iid:tag:<key>:<value>`, `aws_iid:sg:id:` and `aws_iid:sg:name:`, IAM
GetInstanceProfile gives `aws_iid:iamrole:<role ARN>` (unless
`disable_instance_profile_selectors`), and unless `skip_block_device` the root EBS volume must
have been attached with network interface 0 (within 60 s: not swapped in later). An instance
AWS does not know, or an AWS that refuses the call, refuses the attestation.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from attestors.node import agentpath, awsapi
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
from hallmark.bundle import load_pem_certificates
from hallmark.errors import InvalidBundle

ATTESTATION_TYPE = "aws_iid"
DEFAULT_AGENT_PATH_TEMPLATE = "{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}"
DEFAULT_METADATA_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 60
MAX_DOCUMENT = 16 * 1024
_TEMPLATE_FIELDS = {"PluginName", "AccountID", "Region", "InstanceID", "AvailabilityZone"}
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_ACCESS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")
_API_SETTINGS = (
    "skip_block_device",
    "disable_instance_profile_selectors",
    "ec2_endpoint_url",
    "iam_endpoint_url",
    "ca_bundle_pem",
)
# SPIRE's maxSecondsBetweenDeviceAttachments: the root volume comes with the instance.
MAX_SECONDS_BETWEEN_ATTACHMENTS = 60


def _certificates(pem: Any) -> list[x509.Certificate]:
    if not isinstance(pem, str):
        return []
    try:
        certificates = load_pem_certificates(pem.encode())
    except InvalidBundle:
        return []
    return [c for c in certificates if isinstance(c.public_key(), rsa.RSAPublicKey)]


class AwsIidServer(ServerAttestor):
    """Checks the document's signature, account and time; trust on first use per instance."""

    type = ATTESTATION_TYPE
    can_reattest = False

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        require_keys(
            config,
            known={
                "aws_certificates_pem",
                "account_allow_list",
                "agent_path_template",
                "access_key_id",
                "secret_access_key",
                *_API_SETTINGS,
            },
            required=frozenset({"aws_certificates_pem", "account_allow_list"}),
        )
        if not _certificates(config["aws_certificates_pem"]):
            raise InvalidAttestorConfig(
                "aws_certificates_pem must hold AWS's RSA public certificate(s) in PEM",
                code="invalid_aws_certificates",
            )
        accounts = string_list(config, "account_allow_list")
        if not accounts or not all(_ACCOUNT.match(a) for a in accounts):
            raise InvalidAttestorConfig(
                "account_allow_list must list 12-digit AWS account IDs",
                code="invalid_account_allow_list",
            )
        template = agentpath.check_fields(
            config.get("agent_path_template", DEFAULT_AGENT_PATH_TEMPLATE), _TEMPLATE_FIELDS
        )
        return {
            "aws_certificates_pem": config["aws_certificates_pem"],
            "account_allow_list": accounts,
            "agent_path_template": template,
            **_api_config(config),
        }

    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        document_text, signature = _parse(payload)
        if not any(
            _verifies(c, document_text.encode(), signature)
            for c in _certificates(self.config["aws_certificates_pem"])
        ):
            raise NodeAttestationFailed(
                "the instance identity document's signature does not verify with the "
                "configured AWS certificates",
                code="invalid_signature",
            )
        document = _document(document_text)
        account = document["accountId"]
        if account not in self.config["account_allow_list"]:
            raise NodeAttestationFailed(
                f"AWS account {account} is not in the account allow list",
                code="account_not_allowed",
            )
        pending = document.get("pendingTime")
        if isinstance(pending, str):
            try:
                started = dt.datetime.fromisoformat(pending.replace("Z", "+00:00"))
            except ValueError:
                raise NodeAttestationFailed(
                    "pendingTime is not a time", code="invalid_document"
                ) from None
            if started.tzinfo is not None and started - DEFAULT_CLOCK_SKEW > self.now():
                raise NodeAttestationFailed(
                    "the document is from the future (check the clocks)",
                    code="document_not_yet_valid",
                )
        values = {
            "PluginName": ATTESTATION_TYPE,
            "AccountID": account,
            "Region": document["region"],
            "InstanceID": document["instanceId"],
            "AvailabilityZone": str(document.get("availabilityZone", "")),
        }
        path = agentpath.render(self.config["agent_path_template"], values)
        selectors = {
            f"aws_iid:instance:id:{document['instanceId']}",
            f"aws_iid:region:{document['region']}",
        }
        if document.get("availabilityZone"):
            selectors.add(f"aws_iid:az:{document['availabilityZone']}")
        if document.get("imageId"):
            selectors.add(f"aws_iid:image:id:{document['imageId']}")
        if "access_key_id" in self.config:
            selectors.update(self._from_aws_api(document, lookup))
        return AttestedNode(
            agent_path=path,
            selectors=tuple(sorted(selectors)),
            can_reattest=False,
            detail={"account": account, "instance_id": document["instanceId"]},
        )

    # -- SPIRE's selectors from the AWS API, with the tenant's credentials ---------------------
    def _from_aws_api(self, document: Mapping[str, Any], lookup: NodeLookup) -> set[str]:
        region, instance_id = document["region"], document["instanceId"]
        if not _REGION.match(region):
            raise NodeAttestationFailed(
                f"region {region!r} is not a region", code="invalid_document"
            )
        credentials = awsapi.Credentials(
            self.config["access_key_id"], self.config["secret_access_key"]
        )
        ca = self.config.get("ca_bundle_pem", "")
        try:
            instance = awsapi.describe_instance(
                lookup,
                url=self.config["ec2_endpoint_url"].replace("{region}", region),
                region=region,
                instance_id=instance_id,
                credentials=credentials,
                now=self.now(),
                ca_bundle_pem=ca,
            )
            if instance is None:
                raise NodeAttestationFailed(
                    f"EC2 knows no pending or running instance {instance_id} in {region}",
                    code="instance_not_found",
                )
            if not self.config["skip_block_device"]:
                _check_root_device(instance)
            selectors = {f"aws_iid:tag:{key}:{value}" for key, value in instance.tags}
            for group_id, group_name in instance.security_groups:
                selectors |= {f"aws_iid:sg:id:{group_id}", f"aws_iid:sg:name:{group_name}"}
            if (
                instance.instance_profile_arn
                and not self.config["disable_instance_profile_selectors"]
            ):
                roles = awsapi.instance_profile_roles(
                    lookup,
                    url=self.config["iam_endpoint_url"],
                    profile_name=_profile_name(instance.instance_profile_arn),
                    credentials=credentials,
                    now=self.now(),
                    ca_bundle_pem=ca,
                )
                selectors |= {f"aws_iid:iamrole:{arn}" for arn in roles}
        except awsapi.AwsApiError as error:
            raise NodeAttestationFailed(
                f"AWS refused the call: {error}"[:300], code="aws_api_denied"
            ) from None
        return selectors


def _api_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """SPIRE's AWS-API settings: credentials, and what only makes sense with them."""
    given = [k for k in ("access_key_id", "secret_access_key") if k in config]
    if not given:
        extra = [k for k in _API_SETTINGS if k in config]
        if extra:
            raise InvalidAttestorConfig(
                f"{extra[0]} needs access_key_id and secret_access_key", code="missing_setting"
            )
        return {}
    if len(given) == 1:
        raise InvalidAttestorConfig(
            "access_key_id and secret_access_key go together", code="missing_setting"
        )
    key_id, secret = config["access_key_id"], config["secret_access_key"]
    if not isinstance(key_id, str) or not _ACCESS_KEY_ID.match(key_id):
        raise InvalidAttestorConfig(
            "access_key_id must be an AWS access key ID (AKIA...)", code="invalid_setting"
        )
    if not isinstance(secret, str) or not secret:
        raise InvalidAttestorConfig(
            "secret_access_key must be a non-empty string", code="invalid_setting"
        )
    settings: dict[str, Any] = {"access_key_id": key_id, "secret_access_key": secret}
    for flag in ("skip_block_device", "disable_instance_profile_selectors"):
        value = config.get(flag, False)
        if not isinstance(value, bool):
            raise InvalidAttestorConfig(f"{flag} must be true or false", code="invalid_setting")
        settings[flag] = value
    for name, default in (
        ("ec2_endpoint_url", awsapi.DEFAULT_EC2_ENDPOINT),
        ("iam_endpoint_url", awsapi.DEFAULT_IAM_ENDPOINT),
    ):
        url = config.get(name, default)
        if not isinstance(url, str) or not _endpoint_url(url):
            raise InvalidAttestorConfig(
                f"{name} must be an https:// URL without query", code="invalid_url"
            )
        settings[name] = url
    if "ca_bundle_pem" in config:
        pem = config["ca_bundle_pem"]
        try:
            ok = isinstance(pem, str) and bool(load_pem_certificates(pem.encode()))
        except InvalidBundle:
            ok = False
        if not ok:
            raise InvalidAttestorConfig(
                "ca_bundle_pem must hold PEM CA certificates", code="invalid_ca_bundle"
            )
        settings["ca_bundle_pem"] = pem
    return settings


def _endpoint_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url.replace("{region}", "us-east-1"))
        hostname = parts.hostname
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme == "https" and bool(hostname) and not parts.query and not parts.fragment


def _check_root_device(instance: awsapi.Ec2Instance) -> None:
    """SPIRE's anti-tampering check: an EBS root volume attached with network interface 0."""
    if "0" not in instance.interfaces:
        raise NodeAttestationFailed(
            "the instance's network interface with device index 0 is inaccessible",
            code="root_device_check_failed",
        )
    if instance.root_device_type == "instance-store":
        return
    if instance.root_device_name not in instance.block_devices:
        raise NodeAttestationFailed(
            f"no block device mapping for the root device {instance.root_device_name!r}",
            code="root_device_check_failed",
        )
    interface_at = instance.interfaces["0"]
    root_at = instance.block_devices[instance.root_device_name]
    if interface_at is None or root_at is None:
        raise NodeAttestationFailed(
            "EC2 gave no attach time for the root volume or network interface 0",
            code="root_device_check_failed",
        )
    apart = abs((interface_at - root_at).total_seconds())
    if apart > MAX_SECONDS_BETWEEN_ATTACHMENTS:
        raise NodeAttestationFailed(
            f"the root volume was attached {int(apart)} s apart from network interface 0 "
            "(detached and re-attached?)",
            code="root_device_check_failed",
        )


def _profile_name(arn: str) -> str:
    """`arn:aws:iam::<account>:instance-profile/<path>/<name>` -> `<name>` (as SPIRE)."""
    match = re.search(r"instance-profile[/:](.+)$", arn.split(":", 5)[-1])
    if not arn.startswith("arn:") or match is None:
        raise NodeAttestationFailed(
            f"{arn!r} is not an instance profile ARN", code="attestor_unreachable"
        )
    return match.group(1).split("/")[-1]


def _parse(payload: bytes) -> tuple[str, bytes]:
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise InvalidAttestationPayload("aws_iid attestation data is not JSON") from None
    document = message.get("document") if isinstance(message, dict) else None
    signature = message.get("signature") if isinstance(message, dict) else None
    if not isinstance(document, str) or not isinstance(signature, str):
        raise InvalidAttestationPayload(
            'aws_iid attestation data must be {"document": "...", "signature": "<base64>"}'
        )
    if len(document) > MAX_DOCUMENT:
        raise InvalidAttestationPayload("aws_iid document is too large")
    try:
        return document, base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAttestationPayload("aws_iid signature is not base64") from None


def _document(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError:
        raise NodeAttestationFailed("the document is not JSON", code="invalid_document") from None
    if not isinstance(document, dict) or not all(
        isinstance(document.get(k), str) and document.get(k)
        for k in ("accountId", "region", "instanceId")
    ):
        raise NodeAttestationFailed(
            "the document lacks accountId, region or instanceId", code="invalid_document"
        )
    return document


def _verifies(certificate: x509.Certificate, data: bytes, signature: bytes) -> bool:
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


class AwsIidAgent(AgentAttestor):
    """The agent half: SPIRE's `ec2_metadata_endpoint`; IMDSv2 every time."""

    type = ATTESTATION_TYPE
    can_reattest = False

    def __init__(self, endpoint: str = DEFAULT_METADATA_ENDPOINT) -> None:
        self.endpoint = endpoint.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AwsIidAgent:
        endpoint = settings.get("ec2_metadata_endpoint", DEFAULT_METADATA_ENDPOINT)
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise InvalidAttestorConfig(
                "ec2_metadata_endpoint must be an http(s) URL", code="invalid_setting"
            )
        return cls(endpoint)

    def _request(self, method: str, path: str, headers: dict[str, str]) -> str:
        request = urllib.request.Request(  # noqa: S310 - the configured metadata endpoint
            self.endpoint + path, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return str(answer.read().decode())

    def payload(self) -> bytes:
        token = self._request(
            "PUT",
            "/latest/api/token",
            {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
        )
        headers = {"X-aws-ec2-metadata-token": token}
        document = self._request("GET", "/latest/dynamic/instance-identity/document", headers)
        signature = self._request("GET", "/latest/dynamic/instance-identity/signature", headers)
        return json.dumps({"document": document, "signature": signature}).encode()
