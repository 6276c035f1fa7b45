"""gcp_iit and azure_msi: agent halves against fake metadata services, server halves against
the providers' JWKS over HTTPS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from attestors.node import azure_msi, catalog, gcp_iit
from attestors.node.azure_msi import AzureMsiAgent, AzureMsiServer
from attestors.node.base import InvalidAttestorConfig, NodeAttestationFailed
from attestors.node.gcp_iit import GcpIitAgent, GcpIitServer
from issuance.services.node_attestors import ALLOWED_NETWORKS_ENV, TenantLookup
from tests.fakes.clouds import FakeAzureVm, FakeGce


@pytest.fixture(scope="module")
def gce() -> Iterator[FakeGce]:
    fake = FakeGce().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzureVm]:
    fake = FakeAzureVm().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "127.0.0.0/8")


def gcp_server(gce: FakeGce, **config: Any) -> GcpIitServer:
    settings = {
        "projectid_allow_list": [gce.project],
        "jwks_url": gce.google.jwks_url,
        "ca_bundle_pem": gce.google.ca_pem,
    }
    settings.update(config)
    return GcpIitServer(settings, trust_domain="gcp.example")


def run(server: Any, payload: bytes) -> Any:
    return server.attest(payload, challenge=None, response=None, lookup=TenantLookup())


def test_gcp_identity_token_gives_spires_agent_id_and_selectors(gce):
    host = gce.metadata.url.removeprefix("http://")
    node = run(gcp_server(gce), GcpIitAgent(identity_token_host=host).payload())
    assert node.agent_path == f"gcp_iit/{gce.project}/{gce.instance_id}"
    assert set(node.selectors) == {
        f"gcp_iit:project-id:{gce.project}",
        f"gcp_iit:zone:{gce.zone}",
        f"gcp_iit:instance-name:{gce.instance_name}",
    }
    assert node.proof_id and not node.can_reattest


def test_gcp_project_outside_the_allow_list_is_refused(gce):
    with pytest.raises(NodeAttestationFailed) as refused:
        run(
            gcp_server(gce, projectid_allow_list=["someone-else"]),
            json.dumps({"token": gce.token("spire-gcp-node-attestor")}).encode(),
        )
    assert refused.value.code == "project_not_allowed"


def test_gcp_token_for_another_audience_or_expired_is_refused(gce):
    for token, code in (
        (gce.token("https://vault.example"), "invalid_audience"),
        (gce.token("spire-gcp-node-attestor", issued_at=int(time.time()) - 7200), "token_expired"),
    ):
        with pytest.raises(NodeAttestationFailed) as refused:
            run(gcp_server(gce), json.dumps({"token": token}).encode())
        assert refused.value.code == code


def test_gcp_token_without_compute_engine_claims_is_refused(gce):
    # a Google-signed token asked for without format=full carries no google.compute_engine
    now = int(time.time())
    claims = {
        "aud": gcp_iit.DEFAULT_AUDIENCE,
        "exp": now + 600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "117820386487316281384",
    }
    for google in (
        None,
        {"compute_engine": {"project_id": gce.project}},
        {"compute_engine": {"project_id": gce.project, "instance_id": 4242}},  # not text
    ):
        token = gce.google.sign(claims if google is None else {**claims, "google": google})
        with pytest.raises(NodeAttestationFailed) as refused:
            run(gcp_server(gce), json.dumps({"token": token}).encode())
        assert refused.value.code == "invalid_token"


def test_gcp_node_carries_the_tokens_expiry_and_verifies_against_an_inline_jwks(gce):
    # given a tenant that pastes Google's keys instead of naming a URL
    settings = {"projectid_allow_list": [gce.project], "jwks": gce.google.jwks()}
    server = GcpIitServer(catalog.validate_config("gcp_iit", settings), trust_domain="gcp.example")
    token = gce.token(gcp_iit.DEFAULT_AUDIENCE, ttl=900)

    node = run(server, json.dumps({"token": token}).encode())

    # then the proof counts until the token's own expiry (replay protection's window)
    assert node.proof_expires_at.timestamp() == pytest.approx(time.time() + 900, abs=5)
    assert node.can_reattest is False
    assert node.detail == {"project": gce.project, "instance_id": gce.instance_id}


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        ({"audience": 42}, "invalid_setting"),
        ({"audience": ""}, "invalid_setting"),
        ({"jwks": {"keys": "nope"}}, "invalid_jwks"),
        ({"jwks": ["not", "a", "set"]}, "invalid_jwks"),
        ({"jwks_url": 42}, "invalid_url"),
        ({"ca_bundle_pem": 42}, "invalid_setting"),
        ({"agent_path_template": "gcp/{{ .Nope }}"}, "invalid_agent_path_template"),
    ],
    ids=[
        "audience-not-text",
        "audience-empty",
        "jwks-keys-not-list",
        "jwks-not-object",
        "url-not-text",
        "ca-not-text",
        "template-unknown-field",
    ],
)
def test_gcp_settings_are_refused_with_their_code(setting, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("gcp_iit", {"projectid_allow_list": ["p"], **setting})
    assert refused.value.code == code


def test_gcp_settings_are_kept_with_spires_defaults():
    jwks = {"keys": []}

    plain = catalog.validate_config("gcp_iit", {"projectid_allow_list": ["p"]})
    pasted = catalog.validate_config(
        "gcp_iit", {"projectid_allow_list": ["p"], "jwks": jwks, "ca_bundle_pem": "PEM"}
    )

    assert plain == {
        "projectid_allow_list": ["p"],
        "audience": gcp_iit.DEFAULT_AUDIENCE,
        "agent_path_template": gcp_iit.DEFAULT_AGENT_PATH_TEMPLATE,
        "jwks_url": gcp_iit.GOOGLE_JWKS_URL,
    }
    assert pasted["jwks"] == jwks and pasted["ca_bundle_pem"] == "PEM"
    assert "jwks_url" not in pasted


def test_gcp_agent_settings_are_spires():
    agent = GcpIitAgent.from_settings(
        {"identity_token_host": "metadata.internal:8080", "service_account": "sa", "audience": "a"}
    )
    default = GcpIitAgent.from_settings({})

    assert (agent.host, agent.service_account, agent.audience) == (
        "metadata.internal:8080",
        "sa",
        "a",
    )
    assert (default.host, default.service_account, default.audience) == (
        gcp_iit.DEFAULT_TOKEN_HOST,
        "default",
        gcp_iit.DEFAULT_AUDIENCE,
    )


def test_gcp_metadata_needs_its_header(gce):
    import urllib.error
    import urllib.request

    url = f"{gce.metadata.url}/computeMetadata/v1/instance/service-accounts/default/identity"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}?audience=x&format=full")  # noqa: S310
    assert refused.value.code == 403


def azure_server(azure: FakeAzureVm, **tenant: Any) -> AzureMsiServer:
    settings = {"jwks_url": azure.azure_ad.jwks_url, "ca_bundle_pem": azure.azure_ad.ca_pem}
    settings.update(tenant)
    return AzureMsiServer({"tenants": {azure.tenant_id: settings}}, trust_domain="az.example")


def test_azure_msi_token_gives_spires_agent_id(azure):
    node = run(azure_server(azure), AzureMsiAgent(endpoint=azure.imds.url).payload())
    assert node.agent_path == f"azure_msi/{azure.tenant_id}/{azure.principal_id}"
    assert f"azure_msi:tenant-id:{azure.tenant_id}" in node.selectors
    assert node.proof_id


def test_azure_token_of_another_tenant_is_refused(azure):
    other = FakeAzureVm()
    token = other.token("https://management.azure.com/")
    with pytest.raises(NodeAttestationFailed) as refused:
        run(azure_server(azure), json.dumps({"token": token}).encode())
    assert refused.value.code == "tenant_not_allowed"


def test_azure_token_forged_for_the_allowed_tenant_is_refused(azure):
    # a token claiming the allowed tenant but signed by another key
    forger = FakeAzureVm(tenant_id=azure.tenant_id)
    token = forger.token("https://management.azure.com/")
    with pytest.raises(NodeAttestationFailed) as refused:
        run(azure_server(azure), json.dumps({"token": token}).encode())
    assert refused.value.code == "unknown_signing_key"


def test_azure_wrong_resource_is_refused(azure):
    token = azure.token("https://vault.azure.net")
    with pytest.raises(NodeAttestationFailed) as refused:
        run(azure_server(azure), json.dumps({"token": token}).encode())
    assert refused.value.code == "invalid_audience"


def test_azure_token_without_a_principal_is_refused(azure):
    now = int(time.time())
    claims = {
        "aud": azure_msi.DEFAULT_RESOURCE,
        "iss": f"https://sts.windows.net/{azure.tenant_id}/",
        "iat": now,
        "exp": now + 600,
        "tid": azure.tenant_id,
    }
    for principal in ({}, {"oid": "not-a-guid"}):
        token = azure.azure_ad.sign({**claims, **principal})
        with pytest.raises(NodeAttestationFailed) as refused:
            run(azure_server(azure), json.dumps({"token": token}).encode())
        assert refused.value.code == "invalid_token"


def test_azure_node_carries_the_tokens_expiry_and_verifies_against_an_inline_jwks(azure):
    # given an Azure AD tenant whose keys are pasted instead of fetched
    config = {"tenants": {azure.tenant_id: {"jwks": azure.azure_ad.jwks()}}}
    server = AzureMsiServer(catalog.validate_config("azure_msi", config), trust_domain="az.example")
    token = azure.token(azure_msi.DEFAULT_RESOURCE, ttl=900)

    node = run(server, json.dumps({"token": token}).encode())

    # then the proof counts until the token's expiry; the agent may re-attest, as SPIRE's
    assert node.proof_expires_at.timestamp() == pytest.approx(time.time() + 900, abs=5)
    assert node.can_reattest is True and AzureMsiAgent.can_reattest is True
    assert node.detail == {"tenant_id": azure.tenant_id, "principal_id": azure.principal_id}


def test_azure_agent_settings_are_spires():
    agent = AzureMsiAgent.from_settings(
        {"resource_id": "https://vault.example", "imds_endpoint": "http://imds.internal/"}
    )
    default = AzureMsiAgent.from_settings({})

    assert (agent.resource_id, agent.endpoint) == ("https://vault.example", "http://imds.internal")
    assert (default.resource_id, default.endpoint) == (
        azure_msi.DEFAULT_RESOURCE,
        azure_msi.DEFAULT_IMDS,
    )


@pytest.mark.parametrize(
    ("kind", "config", "code"),
    [
        ("gcp_iit", {}, "missing_setting"),
        ("gcp_iit", {"projectid_allow_list": []}, "invalid_projectid_allow_list"),
        ("gcp_iit", {"projectid_allow_list": ["p"], "jwks_url": "http://x"}, "invalid_url"),
        ("azure_msi", {"tenants": {"not-a-guid": {}}}, "invalid_tenant_id"),
        ("azure_msi", {"tenants": {}}, "invalid_setting"),
        ("azure_msi", {}, "missing_setting"),
        (
            "azure_msi",
            {"tenants": {"72f988bf-86f1-41af-91ab-2d7cd011db47": {}}, "x": 1},
            "unknown_setting",
        ),
        (
            "azure_msi",
            {"tenants": {"72f988bf-86f1-41af-91ab-2d7cd011db47": "x"}},
            "invalid_setting",
        ),
    ],
)
def test_config_is_validated_with_stable_codes(kind, config, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config(kind, config)
    assert refused.value.code == code


TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.mark.parametrize(
    ("tenant", "code"),
    [
        ({"jwks": {"keys": "nope"}}, "invalid_jwks"),
        ({"jwks": ["not", "a", "set"]}, "invalid_jwks"),
        ({"jwks_url": "http://login.example/keys"}, "invalid_url"),
        ({"jwks_url": 42}, "invalid_url"),
        ({"resource_id": "x", "unknown": 1}, "unknown_setting"),
    ],
    ids=["jwks-keys-not-list", "jwks-not-object", "http-url", "url-not-text", "unknown-key"],
)
def test_azure_tenant_settings_are_refused_with_their_code(tenant, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("azure_msi", {"tenants": {TID: tenant}})
    assert refused.value.code == code


def test_azure_tenant_settings_are_kept_with_spires_defaults():
    jwks = {"keys": []}
    kept = catalog.validate_config(
        "azure_msi",
        {"tenants": {TID: {}, TID.replace("7", "8"): {"jwks": jwks, "ca_bundle_pem": "PEM"}}},
    )["tenants"]

    assert kept[TID] == {
        "resource_id": azure_msi.DEFAULT_RESOURCE,
        "jwks_url": f"https://login.microsoftonline.com/{TID}/discovery/v2.0/keys",
    }
    assert kept[TID.replace("7", "8")] == {
        "resource_id": azure_msi.DEFAULT_RESOURCE,
        "jwks": jwks,
        "ca_bundle_pem": "PEM",
    }
