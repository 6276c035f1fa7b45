"""The AWS APIs aws_iid reads with a tenant's credentials: EC2 DescribeInstances, IAM
GetInstanceProfile, over AWS's Query protocol (a form-encoded POST, an XML answer), signed
with Signature Version 4.

Written here rather than taken from botocore: two calls and the signature are ~150 lines, and
the requests must go through the platform's `NodeLookup.https` (address checks, pinned
connection, size limits), which botocore's own HTTP stack would bypass.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import urllib.parse
import xml.etree.ElementTree as ET  # noqa: N817 - the usual name
from collections.abc import Mapping
from dataclasses import dataclass, field

from attestors.node.base import NodeAttestationFailed, NodeLookup

ALGORITHM = "AWS4-HMAC-SHA256"
EC2_API_VERSION = "2016-11-15"
IAM_API_VERSION = "2010-05-08"
DEFAULT_EC2_ENDPOINT = "https://ec2.{region}.amazonaws.com"
DEFAULT_IAM_ENDPOINT = "https://iam.amazonaws.com"
IAM_SIGNING_REGION = "us-east-1"  # IAM is global; the aws partition signs it for us-east-1
FORM = "application/x-www-form-urlencoded; charset=utf-8"
# SPIRE asks only for instances that are pending or running.
INSTANCE_STATES = ("pending", "running")


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


class AwsApiError(Exception):
    """An AWS error answer: its code (`AuthFailure`, `InvalidInstanceID.NotFound`, ...)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _encode(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def signature_headers(  # noqa: PLR0913 - one request's parts and its signer
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes,
    region: str,
    service: str,
    credentials: Credentials,
    now: dt.datetime,
) -> dict[str, str]:
    """`headers` plus `Host`, `X-Amz-Date` and the SigV4 `Authorization` over all of them."""
    parts = urllib.parse.urlsplit(url)
    amz_date = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    signed = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    signed["host"] = parts.netloc.rsplit("@", 1)[-1]
    signed["x-amz-date"] = amz_date
    names = ";".join(sorted(signed))
    query = "&".join(
        sorted(
            f"{_encode(k)}={_encode(v)}"
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
    )
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(parts.path or "/", safe="/-_.~%"),
            query,
            "".join(f"{k}:{signed[k]}\n" for k in sorted(signed)),
            names,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + credentials.secret_access_key).encode(), amz_date[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        **headers,
        "Host": signed["host"],
        "X-Amz-Date": amz_date,
        "Authorization": f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}",
    }


def _xml(body: bytes, what: str) -> ET.Element:
    # AWS answers never carry a DTD; refusing one rules out entity expansion altogether.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise NodeAttestationFailed(
            f"{what}: the answer is not AWS XML", code="attestor_unreachable"
        )
    try:
        return ET.fromstring(body)  # noqa: S314 - no DTD (checked above), size bounded by https()
    except ET.ParseError:
        raise NodeAttestationFailed(
            f"{what}: the answer is not XML", code="attestor_unreachable"
        ) from None


def _text(element: ET.Element | None, path: str) -> str:
    found = element.find(path) if element is not None else None
    return (found.text or "").strip() if found is not None else ""


def call(  # noqa: PLR0913 - one Query-protocol call
    lookup: NodeLookup,
    *,
    url: str,
    service: str,
    region: str,
    params: Mapping[str, str],
    credentials: Credentials,
    now: dt.datetime,
    ca_bundle_pem: str = "",
) -> ET.Element:
    """The answer's XML root, or AwsApiError with AWS's code (EC2's and IAM's error shapes)."""
    body = urllib.parse.urlencode(params, quote_via=urllib.parse.quote).encode()
    headers = signature_headers(
        "POST",
        url,
        headers={"Content-Type": FORM},
        body=body,
        region=region,
        service=service,
        credentials=credentials,
        now=now,
    )
    answer = lookup.https("POST", url, body=body, headers=headers, ca_bundle_pem=ca_bundle_pem)
    what = f"{service} {params.get('Action', '')}"
    if answer.status != 200:  # noqa: PLR2004
        if answer.status >= 500:  # noqa: PLR2004
            raise NodeAttestationFailed(
                f"{what}: AWS answered HTTP {answer.status}", code="attestor_unreachable"
            )
        root = _xml(answer.body, what)
        error = root.find(".//{*}Error")
        raise AwsApiError(
            _text(error, "{*}Code") or f"HTTP{answer.status}",
            _text(error, "{*}Message"),
            answer.status,
        )
    return _xml(answer.body, what)


@dataclass(frozen=True)
class Ec2Instance:
    """What aws_iid reads of DescribeInstances' answer for one instance."""

    instance_id: str
    tags: tuple[tuple[str, str], ...] = ()
    security_groups: tuple[tuple[str, str], ...] = ()
    instance_profile_arn: str = ""
    root_device_type: str = ""
    root_device_name: str = ""
    # device name -> EBS attach time; network interfaces: device index -> attach time
    block_devices: Mapping[str, dt.datetime | None] = field(default_factory=dict)
    interfaces: Mapping[str, dt.datetime | None] = field(default_factory=dict)


def _time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def describe_instance(  # noqa: PLR0913
    lookup: NodeLookup,
    *,
    url: str,
    region: str,
    instance_id: str,
    credentials: Credentials,
    now: dt.datetime,
    ca_bundle_pem: str = "",
) -> Ec2Instance | None:
    """The instance if it exists and is pending or running (SPIRE's filter), else None."""
    params = {
        "Action": "DescribeInstances",
        "Version": EC2_API_VERSION,
        "InstanceId.1": instance_id,
    }
    params["Filter.1.Name"] = "instance-state-name"
    for number, state in enumerate(INSTANCE_STATES, 1):
        params[f"Filter.1.Value.{number}"] = state
    try:
        root = call(
            lookup,
            url=url,
            service="ec2",
            region=region,
            params=params,
            credentials=credentials,
            now=now,
            ca_bundle_pem=ca_bundle_pem,
        )
    except AwsApiError as error:
        if error.code == "InvalidInstanceID.NotFound":
            return None
        raise
    for item in root.iterfind("{*}reservationSet/{*}item/{*}instancesSet/{*}item"):
        if _text(item, "{*}instanceId") != instance_id:
            continue
        return Ec2Instance(
            instance_id=instance_id,
            tags=tuple(
                (_text(tag, "{*}key"), _text(tag, "{*}value"))
                for tag in item.iterfind("{*}tagSet/{*}item")
            ),
            security_groups=tuple(
                (_text(group, "{*}groupId"), _text(group, "{*}groupName"))
                for group in item.iterfind("{*}groupSet/{*}item")
            ),
            instance_profile_arn=_text(item, "{*}iamInstanceProfile/{*}arn"),
            root_device_type=_text(item, "{*}rootDeviceType"),
            root_device_name=_text(item, "{*}rootDeviceName"),
            block_devices={
                _text(device, "{*}deviceName"): _time(_text(device, "{*}ebs/{*}attachTime"))
                for device in item.iterfind("{*}blockDeviceMapping/{*}item")
            },
            interfaces={
                _text(eni, "{*}attachment/{*}deviceIndex"): _time(
                    _text(eni, "{*}attachment/{*}attachTime")
                )
                for eni in item.iterfind("{*}networkInterfaceSet/{*}item")
            },
        )
    return None


def instance_profile_roles(  # noqa: PLR0913
    lookup: NodeLookup,
    *,
    url: str,
    profile_name: str,
    credentials: Credentials,
    now: dt.datetime,
    ca_bundle_pem: str = "",
) -> list[str]:
    """The role ARNs of an instance profile (IAM GetInstanceProfile)."""
    root = call(
        lookup,
        url=url,
        service="iam",
        region=IAM_SIGNING_REGION,
        params={
            "Action": "GetInstanceProfile",
            "Version": IAM_API_VERSION,
            "InstanceProfileName": profile_name,
        },
        credentials=credentials,
        now=now,
        ca_bundle_pem=ca_bundle_pem,
    )
    return [
        arn
        for member in root.iterfind(".//{*}InstanceProfile/{*}Roles/{*}member")
        if (arn := _text(member, "{*}Arn"))
    ]
