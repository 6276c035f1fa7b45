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
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import urllib.request
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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
            known={"aws_certificates_pem", "account_allow_list", "agent_path_template"},
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
        return AttestedNode(
            agent_path=path,
            selectors=tuple(sorted(selectors)),
            can_reattest=False,
            detail={"account": account, "instance_id": document["instanceId"]},
        )


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
