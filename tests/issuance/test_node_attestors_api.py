"""`/api/v1/node-attestors`: per-tenant configuration, validated per type, audited, isolated."""

from __future__ import annotations

import pytest

from issuance.models import NodeAttestor
from tenants.models import AuditEvent
from tests.fakes.aws import AwsSigner
from tests.fakes.pki import TestCA, pem

pytestmark = pytest.mark.django_db

URL = "/api/v1/node-attestors"
AWS_SIGNER = AwsSigner()


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return pem(TestCA("fleet").cert)


def psat(token: str = "reviewer", **cluster: object) -> dict:  # type: ignore[type-arg]
    return {
        "clusters": {
            "prod": {
                "service_account_allow_list": ["spire:spire-agent"],
                "token_review_url": "https://kube.example:6443/apis/authentication.k8s.io/v1/tokenreviews",
                "token_review_token": token,
                **cluster,
            }
        }
    }


def aws(**settings: object) -> dict:  # type: ignore[type-arg]
    config = {
        "aws_certificates_pem": AWS_SIGNER.pem,
        "account_allow_list": ["123456789012"],
        "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        **settings,
    }
    return {k: v for k, v in config.items() if v is not None}


def test_create_list_get_patch_delete_are_audited(tenant_a, ca_pem):
    created = tenant_a.client.post(
        URL, {"type": "x509pop", "config": {"ca_bundle_pem": ca_pem}}, format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["type"] == "x509pop"
    assert body["config"]["agent_path_template"] == "{{ .PluginName }}/{{ .Fingerprint }}"
    one = f"{URL}/{body['id']}"
    assert tenant_a.client.get(URL).json()[0]["id"] == body["id"]
    assert tenant_a.client.get(one).json()["config"]["ca_bundle_pem"] == ca_pem
    patched = tenant_a.client.patch(
        one,
        {
            "config": {
                "ca_bundle_pem": ca_pem,
                "agent_path_template": "cn/{{ .Subject.CommonName }}",
            }
        },
        format="json",
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["config"]["agent_path_template"] == "cn/{{ .Subject.CommonName }}"
    assert tenant_a.client.delete(one).status_code == 204
    assert tenant_a.client.get(one).status_code == 404
    actions = list(
        AuditEvent.objects.filter(tenant=tenant_a.tenant, action__startswith="node_attestor.")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["node_attestor.create", "node_attestor.update", "node_attestor.delete"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"type": "x509pop", "config": {}}, 400, "missing_setting"),
        ({"type": "x509pop", "config": {"ca_bundle_pem": "nope"}}, 400, "invalid_ca_bundle"),
        ({"type": "x509pop", "config": "text"}, 400, "invalid_config"),
        ({"type": "join_token", "config": {}}, 400, "attestor_always_on"),
        ({"type": "telepathy", "config": {}}, 400, "invalid_type"),
        ({"type": "tpm_devid", "config": {}}, 400, "missing_setting"),
        ({"type": "k8s_psat", "config": {"clusters": {}}}, 400, "invalid_setting"),
        (
            {"type": "k8s_psat", "config": psat(api_server_url="http://kube:6443")},
            400,
            "invalid_url",
        ),
        ({"type": "aws_iid", "config": aws(secret_access_key=None)}, 400, "missing_setting"),
    ],
)
def test_bad_configuration_is_refused_with_a_stable_code_and_nothing_stored(
    tenant_a, body, status, code
):
    answer = tenant_a.client.post(URL, body, format="json")
    assert answer.status_code == status, answer.content
    assert answer.json()["code"] == code
    with tenant_a.schema():
        assert not NodeAttestor.objects.exists()


def test_one_attestor_per_type(tenant_a, ca_pem):
    body = {"type": "x509pop", "config": {"ca_bundle_pem": ca_pem}}
    assert tenant_a.client.post(URL, body, format="json").status_code == 201
    again = tenant_a.client.post(URL, body, format="json")
    assert again.status_code == 409 and again.json()["code"] == "node_attestor_exists"


def test_bad_patch_keeps_the_stored_config(tenant_a, ca_pem):
    made = tenant_a.client.post(
        URL, {"type": "x509pop", "config": {"ca_bundle_pem": ca_pem}}, format="json"
    ).json()
    bad = tenant_a.client.patch(
        f"{URL}/{made['id']}", {"config": {"ca_bundle_pem": "broken"}}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_ca_bundle"
    moved = tenant_a.client.patch(
        f"{URL}/{made['id']}", {"type": "k8s_psat", "config": {}}, format="json"
    )
    assert moved.status_code == 400 and moved.json()["code"] == "type_immutable"
    assert tenant_a.client.get(f"{URL}/{made['id']}").json()["config"]["ca_bundle_pem"] == ca_pem


def test_credentials_are_never_answered_and_survive_a_patch(tenant_a):
    made = tenant_a.client.post(URL, {"type": "k8s_psat", "config": psat("s3cret")}, format="json")
    assert made.status_code == 201, made.content
    shown = made.json()["config"]["clusters"]["prod"]
    assert shown["token_review_token"] == "<redacted>"  # noqa: S105
    assert "s3cret" not in made.content.decode()
    # a PATCH that sends the answer back keeps the stored credential
    config = made.json()["config"]
    config["clusters"]["prod"]["audience"] = ["hallmark"]
    assert (
        tenant_a.client.patch(f"{URL}/{made.json()['id']}", {"config": config}, format="json")
    ).status_code == 200
    with tenant_a.schema():
        stored = NodeAttestor.objects.get().config["clusters"]["prod"]
    assert stored["token_review_token"] == "s3cret"  # noqa: S105
    assert stored["audience"] == ["hallmark"]


def test_another_tenants_attestor_is_not_found(tenant_a, tenant_b, ca_pem):
    made = tenant_a.client.post(
        URL, {"type": "x509pop", "config": {"ca_bundle_pem": ca_pem}}, format="json"
    ).json()
    one = f"{URL}/{made['id']}"
    assert tenant_b.client.get(URL).json() == []
    for answer in (
        tenant_b.client.get(one),
        tenant_b.client.patch(one, {"config": {"ca_bundle_pem": ca_pem}}, format="json"),
        tenant_b.client.delete(one),
    ):
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"
    assert tenant_a.client.get(one).status_code == 200
    # and B may configure its own x509pop independently
    assert (
        tenant_b.client.post(
            URL, {"type": "x509pop", "config": {"ca_bundle_pem": ca_pem}}, format="json"
        ).status_code
        == 201
    )


def test_api_and_aws_credentials_are_never_answered_and_survive_a_patch(tenant_a):
    psat_made = tenant_a.client.post(
        URL,
        {
            "type": "k8s_psat",
            "config": psat(
                api_server_url="https://kube.example:6443", api_server_token="kube-reader"
            ),
        },
        format="json",
    )
    aws_made = tenant_a.client.post(URL, {"type": "aws_iid", "config": aws()}, format="json")
    assert psat_made.status_code == 201 and aws_made.status_code == 201, aws_made.content
    assert psat_made.json()["config"]["clusters"]["prod"]["api_server_token"] == "<redacted>"  # noqa: S105
    assert aws_made.json()["config"]["secret_access_key"] == "<redacted>"  # noqa: S105
    listed = tenant_a.client.get(URL).content.decode()
    assert "kube-reader" not in listed and "EXAMPLEKEY" not in listed
    config = aws_made.json()["config"]
    config["skip_block_device"] = True
    patched = tenant_a.client.patch(
        f"{URL}/{aws_made.json()['id']}", {"config": config}, format="json"
    )
    assert patched.status_code == 200, patched.content
    with tenant_a.schema():
        stored = NodeAttestor.objects.get(type="aws_iid").config
    assert stored["secret_access_key"] == "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105
    assert stored["skip_block_device"] is True
