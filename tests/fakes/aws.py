"""A fake EC2 instance metadata service (IMDSv2 only) with a test AWS signing certificate,
and a fake of the EC2 and IAM APIs aws_iid's server half calls with a tenant's credentials.

`PUT /latest/api/token` (with `X-aws-ec2-metadata-token-ttl-seconds`) hands out a session
token; `GET /latest/dynamic/instance-identity/document` and `.../signature` answer only with
it (401 otherwise), as IMDSv2 does. The document is shaped as EC2's; the signature is
base64 RSA-SHA256 by the region's (here: a test) certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import string
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.fakes.pki import TestCA, pem, serve, stop_serving


class AwsSigner:
    """Stands in for AWS's per-region instance identity signing key and public certificate."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington State"),
                x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon Web Services LLC"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, document: str) -> str:
        signature = self.key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()


def instance_document(
    account: str = "123456789012", region: str = "us-west-2", **overrides: Any
) -> str:
    """An instance identity document as EC2 writes it (pretty-printed JSON)."""
    document = {
        "accountId": account,
        "architecture": "x86_64",
        "availabilityZone": f"{region}b",
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": "ami-0abcdef1234567890",
        "instanceId": f"i-{secrets.token_hex(8) + secrets.token_hex(1)[:1]}",
        "instanceType": "m5.large",
        "kernelId": None,
        "pendingTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "privateIp": "10.0.12.34",
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }
    document.update(overrides)
    return json.dumps(document, indent=2)


class FakeImds:
    """IMDSv2 on 127.0.0.1 for one instance."""

    def __init__(self, signer: AwsSigner, document: str) -> None:
        self.signer, self.document = signer, document
        self.tokens: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeImds:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _answer(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:  # noqa: N802
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if self.path != "/latest/api/token" or not ttl.isdigit():
                    self._answer(400, "")
                    return
                token = base64.b64encode(secrets.token_bytes(40)).decode()
                fake.tokens.add(token)
                self._answer(200, token)

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("X-aws-ec2-metadata-token") not in fake.tokens:
                    self._answer(401, "")
                    return
                if self.path == "/latest/dynamic/instance-identity/document":
                    self._answer(200, fake.document)
                elif self.path == "/latest/dynamic/instance-identity/signature":
                    signature = fake.signer.sign(fake.document)
                    # EC2 wraps the base64 at 64 characters
                    self._answer(
                        200, "\n".join(signature[i : i + 64] for i in range(0, len(signature), 64))
                    )
                else:
                    self._answer(404, "")

        self._server = serve(Handler)
        return self

    def stop(self) -> None:
        stop_serving(self._server)


# -- EC2 and IAM APIs (Query protocol, SigV4) --------------------------------------------------
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
# which service and signing region each action must be signed for (None: any region)
ACTIONS = {"DescribeInstances": ("ec2", None), "GetInstanceProfile": ("iam", "us-east-1")}


@dataclass
class Ec2Record:
    """One instance as EC2 knows it (made from its identity document)."""

    document: dict[str, Any]
    state: str = "running"
    tags: dict[str, str] = field(default_factory=dict)
    security_groups: list[tuple[str, str]] = field(default_factory=list)
    instance_profile: str = ""  # name; its roles are in FakeAwsApi.profiles
    root_device_type: str = "ebs"
    root_attached_after: int = 0  # seconds between network interface 0 and the root volume


class FakeAwsApi:
    """EC2 DescribeInstances and IAM GetInstanceProfile on 127.0.0.1 over HTTPS.

    Requests are checked as AWS checks them: a SigV4 `Authorization` over the received
    method, path, query, signed headers and body, by the secret of the access key named in the
    credential scope, scoped to the action's service, and an `X-Amz-Date` within 15 minutes.
    EC2 answers a bad signature or unknown key with 401 `AuthFailure`, IAM with 403
    `SignatureDoesNotMatch` / `InvalidClientTokenId`, in each one's error XML.
    """

    def __init__(self) -> None:
        alphabet = string.ascii_uppercase + string.digits
        self.access_key_id = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
        self.secret_access_key = base64.b64encode(secrets.token_bytes(30)).decode()
        self.tls_ca = TestCA("fake AWS API CA")
        self.instances: dict[str, Ec2Record] = {}
        self.profiles: dict[str, list[str]] = {}  # instance profile name -> role ARNs
        self.calls: list[tuple[str, str]] = []  # (action, instance ID or profile name)
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_pem(self) -> str:
        return pem(self.tls_ca.cert)

    def add(self, document: str, **record: Any) -> Ec2Record:
        parsed = json.loads(document)
        self.instances[parsed["instanceId"]] = Ec2Record(parsed, **record)
        return self.instances[parsed["instanceId"]]

    def start(self) -> FakeAwsApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _answer(self, status: int, body: str) -> None:
                data = ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, service: str, status: int, code: str, message: str) -> None:
                request_id = str(uuid.uuid4())
                if service == "ec2":
                    self._answer(
                        status,
                        f"<Response><Errors><Error><Code>{code}</Code><Message>"
                        f"{escape(message)}</Message></Error></Errors>"
                        f"<RequestID>{request_id}</RequestID></Response>",
                    )
                else:
                    self._answer(
                        status,
                        f'<ErrorResponse xmlns="{IAM_NS}"><Error><Type>Sender</Type>'
                        f"<Code>{code}</Code><Message>{escape(message)}</Message></Error>"
                        f"<RequestId>{request_id}</RequestId></ErrorResponse>",
                    )

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                params = {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode()).items()}
                action = params.get("Action", "")
                if action not in ACTIONS:
                    self._error("ec2", 400, "InvalidAction", f"{action} is not valid")
                    return
                service, region = ACTIONS[action]
                refusal = fake.check_signature(self, body, service, region)
                if refusal is not None:
                    self._error(service, *refusal)
                    return
                scope_region = _scope(self.headers.get("Authorization", ""))[2]
                if action == "DescribeInstances":
                    fake.describe(self, params, scope_region)
                else:
                    fake.instance_profile(self, params)

        self._server = serve(Handler, self.tls_ca)
        return self

    def stop(self) -> None:
        stop_serving(self._server)

    # -- SigV4, as the service checks it ------------------------------------------------------
    def check_signature(
        self, request: Any, body: bytes, service: str, region: str | None
    ) -> tuple[int, str, str] | None:
        """None when the request is signed by our key for `service`; else (status, code, msg)."""
        bad = (401, "AuthFailure", "AWS was not able to validate the provided access credentials")
        if service == "iam":
            bad = (
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        key_id, date, scope_region, scope_service, signed_names, signature = _scope(
            request.headers.get("Authorization", "")
        )
        if not key_id:
            return (
                400 if service == "ec2" else 403,
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            )
        if key_id != self.access_key_id:
            if service == "ec2":
                return bad
            return (
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            )
        if scope_service != service or (region and scope_region != region):
            return bad
        amz_date = request.headers.get("X-Amz-Date", "")
        try:
            sent = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return bad
        if abs((dt.datetime.now(dt.UTC) - sent).total_seconds()) > 15 * 60 or amz_date[:8] != date:
            return 400 if service == "ec2" else 403, "RequestExpired", "Request has expired."
        path, _, query = request.path.partition("?")
        pairs = sorted(
            (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
            for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)
        )
        lines = [request.command, path or "/", "&".join(f"{k}={v}" for k, v in pairs)]
        names = signed_names.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return bad
        header_block = ""
        for name in names:
            header_block += name + ":" + " ".join((request.headers.get(name) or "").split()) + "\n"
        lines += [header_block, signed_names, hashlib.sha256(body).hexdigest()]
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        string_to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{date}/{scope_region}/{scope_service}/aws4_request\n"
            + digest
        )
        key = ("AWS4" + self.secret_access_key).encode()
        for part in (date, scope_region, scope_service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        return None if hmac.compare_digest(expected, signature) else bad

    # -- the actions ----------------------------------------------------------------------
    def describe(self, handler: Any, params: dict[str, str], region: str) -> None:
        wanted = [v for k, v in sorted(params.items()) if k.startswith("InstanceId.")]
        states = [v for k, v in params.items() if k.startswith("Filter.1.Value.")]
        if params.get("Filter.1.Name") != "instance-state-name":
            states = []
        self.calls.extend(("DescribeInstances", i) for i in wanted)
        items = []
        for instance_id in wanted:
            record = self.instances.get(instance_id)
            if record is None or record.document["region"] != region:
                handler._error(
                    "ec2",
                    400,
                    "InvalidInstanceID.NotFound",
                    f"The instance ID '{instance_id}' does not exist",
                )
                return
            if not states or record.state in states:
                items.append(_instance_xml(record))
        reservations = "".join(
            f"<item><reservationId>r-{secrets.token_hex(8)}</reservationId>"
            f"<ownerId>{escape(self.instances[i].document['accountId'])}</ownerId>"
            f"<groupSet/><instancesSet>{item}</instancesSet></item>"
            for i, item in zip(wanted, items, strict=False)
        )
        handler._answer(
            200,
            f'<DescribeInstancesResponse xmlns="{EC2_NS}"><requestId>{uuid.uuid4()}</requestId>'
            f"<reservationSet>{reservations}</reservationSet></DescribeInstancesResponse>",
        )

    def instance_profile(self, handler: Any, params: dict[str, str]) -> None:
        name = params.get("InstanceProfileName", "")
        self.calls.append(("GetInstanceProfile", name))
        if name not in self.profiles:
            handler._error("iam", 404, "NoSuchEntity", f"Instance Profile {name} cannot be found.")
            return
        account = "123456789012"
        roles = "".join(
            f"<member><Path>/</Path><Arn>{escape(arn)}</Arn>"
            f"<RoleName>{escape(arn.rsplit('/', 1)[-1])}</RoleName>"
            "<AssumeRolePolicyDocument>%7B%22Version%22%3A%222012-10-17%22%7D"
            "</AssumeRolePolicyDocument><CreateDate>2026-03-02T10:11:12Z</CreateDate>"
            f"<RoleId>AROA{secrets.token_hex(8).upper()}</RoleId></member>"
            for arn in self.profiles[name]
        )
        handler._answer(
            200,
            f'<GetInstanceProfileResponse xmlns="{IAM_NS}"><GetInstanceProfileResult>'
            f"<InstanceProfile><InstanceProfileId>AIPA{secrets.token_hex(8).upper()}"
            f"</InstanceProfileId><Roles>{roles}</Roles>"
            f"<InstanceProfileName>{escape(name)}</InstanceProfileName><Path>/</Path>"
            f"<Arn>arn:aws:iam::{account}:instance-profile/{escape(name)}</Arn>"
            "<CreateDate>2026-03-02T10:11:12Z</CreateDate></InstanceProfile>"
            "</GetInstanceProfileResult><ResponseMetadata>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</GetInstanceProfileResponse>",
        )


def _scope(authorization: str) -> tuple[str, str, str, str, str, str]:
    """(key id, date, region, service, signed headers, signature) of a SigV4 header."""
    algorithm, _, rest = authorization.partition(" ")
    fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
    credential = fields.get("Credential", "").split("/")
    if algorithm != "AWS4-HMAC-SHA256" or len(credential) != 5 or credential[4] != "aws4_request":
        return "", "", "", "", "", ""
    return (
        credential[0],
        credential[1],
        credential[2],
        credential[3],
        fields.get("SignedHeaders", ""),
        fields.get("Signature", ""),
    )


def _instance_xml(record: Ec2Record) -> str:
    """One instancesSet item as DescribeInstances answers it (trimmed of fields nothing reads)."""
    doc = record.document
    launched = dt.datetime.fromisoformat(doc["pendingTime"].replace("Z", "+00:00"))
    at = launched.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    root_at = (launched + dt.timedelta(seconds=record.root_attached_after)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    code = {"pending": 0, "running": 16, "stopping": 64, "stopped": 80}.get(record.state, 48)
    ip = doc.get("privateIp", "10.0.12.34")
    dns = f"ip-{ip.replace('.', '-')}.{doc['region']}.compute.internal"
    groups = "".join(
        f"<item><groupId>{escape(g)}</groupId><groupName>{escape(n)}</groupName></item>"
        for g, n in record.security_groups
    )
    tags = "".join(
        f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>"
        for k, v in record.tags.items()
    )
    profile = (
        f"<iamInstanceProfile><arn>arn:aws:iam::{doc['accountId']}:instance-profile/"
        f"{escape(record.instance_profile)}</arn><id>AIPA{secrets.token_hex(8).upper()}</id>"
        "</iamInstanceProfile>"
        if record.instance_profile
        else ""
    )
    block = (
        "<blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs>"
        f"<volumeId>vol-{secrets.token_hex(8)}</volumeId><status>attached</status>"
        f"<attachTime>{root_at}</attachTime><deleteOnTermination>true</deleteOnTermination>"
        "</ebs></item></blockDeviceMapping>"
        if record.root_device_type == "ebs"
        else "<blockDeviceMapping/>"
    )
    return (
        f"<item><instanceId>{doc['instanceId']}</instanceId><imageId>{doc['imageId']}</imageId>"
        f"<instanceState><code>{code}</code><name>{record.state}</name></instanceState>"
        f"<privateDnsName>{dns}</privateDnsName><dnsName/><reason/>"
        f"<amiLaunchIndex>0</amiLaunchIndex><productCodes/>"
        f"<instanceType>{doc['instanceType']}</instanceType><launchTime>{at}</launchTime>"
        f"<placement><availabilityZone>{doc['availabilityZone']}</availabilityZone>"
        "<groupName/><tenancy>default</tenancy></placement>"
        "<monitoring><state>disabled</state></monitoring>"
        "<subnetId>subnet-0a1b2c3d4e5f60718</subnetId><vpcId>vpc-0123456789abcdef0</vpcId>"
        f"<privateIpAddress>{ip}</privateIpAddress><sourceDestCheck>true</sourceDestCheck>"
        f"<groupSet>{groups}</groupSet><architecture>{doc['architecture']}</architecture>"
        f"<rootDeviceType>{record.root_device_type}</rootDeviceType>"
        "<rootDeviceName>/dev/xvda</rootDeviceName>"
        f"{block}<virtualizationType>hvm</virtualizationType>"
        f"<tagSet>{tags}</tagSet>{profile}<hypervisor>xen</hypervisor>"
        "<networkInterfaceSet><item>"
        f"<networkInterfaceId>eni-{secrets.token_hex(8)}</networkInterfaceId>"
        "<subnetId>subnet-0a1b2c3d4e5f60718</subnetId><vpcId>vpc-0123456789abcdef0</vpcId>"
        f"<ownerId>{doc['accountId']}</ownerId><status>in-use</status>"
        f"<privateIpAddress>{ip}</privateIpAddress><sourceDestCheck>true</sourceDestCheck>"
        f"<groupSet>{groups}</groupSet><attachment>"
        f"<attachmentId>eni-attach-{secrets.token_hex(8)}</attachmentId>"
        f"<deviceIndex>0</deviceIndex><status>attached</status><attachTime>{at}</attachTime>"
        "<deleteOnTermination>true</deleteOnTermination><networkCardIndex>0</networkCardIndex>"
        "</attachment></item></networkInterfaceSet>"
        "<ebsOptimized>false</ebsOptimized><enaSupport>true</enaSupport></item>"
    )
