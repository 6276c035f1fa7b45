"""k8s_psat's server half against a fake API server over HTTPS (JWKS and TokenReview)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from attestors.node import catalog
from attestors.node.base import InvalidAttestorConfig, NodeAttestationFailed
from attestors.node.jwtproof import JWKS_CACHE
from attestors.node.k8s_psat import K8sPsatAgent, K8sPsatServer
from issuance.services.node_attestors import ALLOWED_NETWORKS_ENV, TenantLookup
from tests.fakes.kubernetes import ISSUER, FakeKubernetes, Pod

TD = "cluster.example"


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "127.0.0.0/8")


def jwks_config(kube: FakeKubernetes, **cluster: Any) -> dict[str, Any]:
    settings = {
        "service_account_allow_list": ["spire:spire-agent"],
        "jwks_url": f"{kube.url}/openid/v1/jwks",
        "ca_bundle_pem": kube.ca_pem,
        "issuer": ISSUER,
    }
    settings.update(cluster)
    return {"clusters": {"prod": settings}}


def review_config(kube: FakeKubernetes, **cluster: Any) -> dict[str, Any]:
    settings = {
        "service_account_allow_list": ["spire:spire-agent"],
        "token_review_url": f"{kube.url}/apis/authentication.k8s.io/v1/tokenreviews",
        "token_review_token": kube.reviewer_token,
        "ca_bundle_pem": kube.ca_pem,
    }
    settings.update(cluster)
    return {"clusters": {"prod": settings}}


def payload(token: str, cluster: str = "prod") -> bytes:
    import json

    return json.dumps({"cluster": cluster, "token": token}).encode()


def token_selectors(pod: Pod) -> set[str]:
    """SPIRE's selectors of what the token (or TokenReview) says of the agent pod."""
    return {
        "k8s_psat:cluster:prod",
        f"k8s_psat:agent_ns:{pod.namespace}",
        f"k8s_psat:agent_sa:{pod.service_account}",
        f"k8s_psat:agent_pod_name:{pod.name}",
        f"k8s_psat:agent_pod_uid:{pod.uid}",
        f"k8s_psat:agent_node_name:{pod.node_name}",
        f"k8s_psat:agent_node_uid:{pod.node_uid}",
    }


def attest(config: dict[str, Any], data: bytes) -> Any:
    server = K8sPsatServer(config, trust_domain=TD)
    return server.attest(data, challenge=None, response=None, lookup=TenantLookup())


@pytest.mark.parametrize("verifier", ["jwks_url", "token_review"])
def test_projected_token_gives_spires_agent_id_and_selectors(kube, verifier):
    pod = Pod()
    config = jwks_config(kube) if verifier == "jwks_url" else review_config(kube)
    node = attest(config, payload(kube.token(pod)))
    assert node.agent_path == f"k8s_psat/prod/{pod.node_uid}"
    assert set(node.selectors) == token_selectors(pod)
    assert node.proof_id and node.proof_expires_at is not None


def test_inline_jwks_needs_no_network(kube, monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "")
    config = {
        "clusters": {
            "prod": {"service_account_allow_list": ["spire:spire-agent"], "jwks": kube.jwks()}
        }
    }
    assert attest(config, payload(kube.token(Pod()))).agent_path.startswith("k8s_psat/prod/")


@pytest.mark.parametrize("verifier", ["jwks_url", "token_review"])
def test_service_account_outside_the_allow_list_is_refused(kube, verifier):
    config = jwks_config(kube) if verifier == "jwks_url" else review_config(kube)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(config, payload(kube.token(Pod(service_account="default"))))
    assert refused.value.code == "service_account_not_allowed"


@pytest.mark.parametrize("verifier", ["jwks_url", "token_review"])
def test_wrong_audience_is_refused(kube, verifier):
    config = jwks_config(kube) if verifier == "jwks_url" else review_config(kube)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(config, payload(kube.token(Pod(), audience=["vault"])))
    assert refused.value.code in {"invalid_audience", "token_review_denied"}


@pytest.mark.parametrize("verifier", ["jwks_url", "token_review"])
def test_expired_token_is_refused_beyond_the_skew(kube, verifier):
    config = jwks_config(kube) if verifier == "jwks_url" else review_config(kube)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(config, payload(kube.token(Pod(), issued_at=old, ttl=3600)))
    assert refused.value.code == "token_expired"
    # 30 s past expiry is within the tolerated clock skew (JWKS check)
    if verifier == "jwks_url":
        recent = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=630)
        assert attest(config, payload(kube.token(Pod(), issued_at=recent, ttl=600)))


def test_token_signed_by_another_key_is_refused(kube):
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(jwks_config(kube), payload(kube.token(Pod(), key=forger)))
    assert refused.value.code == "invalid_token"
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(review_config(kube), payload(kube.token(Pod(), key=forger)))
    assert refused.value.code == "token_review_denied"


def test_unknown_cluster_is_refused(kube):
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(jwks_config(kube), payload(kube.token(Pod()), cluster="staging"))
    assert refused.value.code == "unknown_cluster"


def test_wrong_reviewer_credential_is_unreachable(kube):
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(review_config(kube, token_review_token="wrong"), payload(kube.token(Pod())))
    assert refused.value.code == "attestor_unreachable"


def test_loopback_is_refused_unless_allowed(kube, monkeypatch):
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "")
    JWKS_CACHE.clear()
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(review_config(kube), payload(kube.token(Pod())))
    assert refused.value.code == "attestor_unreachable"


def test_untrusted_tls_is_unreachable(kube):
    from tests.fakes.pki import TestCA, pem

    JWKS_CACHE.clear()
    config = jwks_config(kube, ca_bundle_pem=pem(TestCA("other").cert))
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(config, payload(kube.token(Pod())))
    assert refused.value.code == "attestor_unreachable"


@pytest.mark.parametrize(
    ("cluster", "code"),
    [
        ({"service_account_allow_list": ["spire:spire-agent"]}, "invalid_verifier"),
        (
            {"service_account_allow_list": ["spire"], "jwks_url": "https://k8s/openid/v1/jwks"},
            "invalid_service_account_allow_list",
        ),
        (
            {"service_account_allow_list": ["a:b"], "jwks_url": "http://k8s/openid/v1/jwks"},
            "invalid_url",
        ),
        (
            {"service_account_allow_list": ["a:b"], "token_review_url": "https://k8s/x"},
            "missing_setting",
        ),
        ({"service_account_allow_list": ["a:b"], "jwks": {"keys": "no"}}, "invalid_jwks"),
        ({"jwks_url": "https://k8s/x"}, "missing_setting"),
    ],
)
def test_config_is_validated_with_stable_codes(cluster, code):
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("k8s_psat", {"clusters": {"prod": cluster}})
    assert refused.value.code == code


def test_agent_half_reads_the_token_fresh(tmp_path):
    path = tmp_path / "token"
    agent = K8sPsatAgent.from_settings({"cluster": "prod", "token_path": str(path)})
    path.write_text("first\n")
    assert b'"first"' in agent.payload()
    path.write_text("rotated")
    assert b'"rotated"' in agent.payload()


# -- the agent's Pod and Node from the API server (SPIRE's kubeconfig lookups) --------------
def api_config(kube: FakeKubernetes, verifier: str = "jwks_url", **cluster: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"api_server_url": kube.url}
    if verifier == "jwks_url":
        settings["api_server_token"] = kube.reviewer_token
    settings.update(cluster)
    return (jwks_config if verifier == "jwks_url" else review_config)(kube, **settings)


@pytest.mark.parametrize("verifier", ["jwks_url", "token_review"])
def test_api_server_adds_spires_node_ip_and_allowed_label_selectors(kube, verifier):
    pod = Pod(node_name="worker-eu-3")
    kube.schedule(
        pod,
        pod_labels={"app": "spire-agent", "pod-template-hash": "7d4b9c"},
        node_labels={"pool": "gpu"},
        host_ip="10.0.31.9",
    )
    config = api_config(
        kube,
        verifier,
        allowed_pod_label_keys=["app", "absent"],
        allowed_node_label_keys=["pool", "topology.kubernetes.io/zone"],
    )
    node = attest(config, payload(kube.token(pod)))
    assert node.agent_path == f"k8s_psat/prod/{pod.node_uid}"
    assert set(node.selectors) == token_selectors(pod) | {
        "k8s_psat:agent_node_ip:10.0.31.9",
        "k8s_psat:agent_pod_label:app:spire-agent",
        "k8s_psat:agent_node_label:pool:gpu",
        "k8s_psat:agent_node_label:topology.kubernetes.io/zone:eu-west-1b",
    }
    assert ("GET", f"/api/v1/namespaces/spire/pods/{pod.name}") in kube.requests
    assert ("GET", "/api/v1/nodes/worker-eu-3") in kube.requests


def test_node_uid_comes_from_the_api_when_the_token_names_no_node(kube, monkeypatch):
    # a token of Kubernetes before 1.30 has no node claim; the Node object gives the UID
    pod = Pod()
    kube.schedule(pod)
    claims_without_node = kube.token(Pod(name=pod.name, uid=pod.uid, node_name="", node_uid=""))
    node = attest(api_config(kube), payload(claims_without_node))
    assert node.agent_path == f"k8s_psat/prod/{pod.node_uid}"
    assert "k8s_psat:agent_node_name:worker-1" in node.selectors
    with pytest.raises(NodeAttestationFailed) as refused:  # without API access: no node
        attest(jwks_config(kube), payload(claims_without_node))
    assert refused.value.code == "token_missing_node"


def test_pod_with_another_uid_than_the_token_is_refused(kube):
    # the agent pod was deleted and recreated under the same name: the old token is not it
    pod = Pod()
    kube.schedule(pod)
    stale = kube.token(Pod(name=pod.name, uid="0b0e4c7e-dead-4bee-8000-000000000001"))
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(api_config(kube), payload(stale))
    assert refused.value.code == "pod_uid_mismatch"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("no_pod", "agent_pod_not_found"),
        ("no_node", "agent_node_not_found"),
        ("wrong_credential", "attestor_unreachable"),
        ("closed_port", "attestor_unreachable"),
    ],
)
def test_api_server_that_cannot_answer_refuses_the_attestation(kube, change, code):
    pod = Pod(node_name=f"worker-{change}")
    if change != "no_pod":
        kube.schedule(pod)
    if change == "no_node":
        del kube.objects[f"/api/v1/nodes/{pod.node_name}"]
    cluster: dict[str, Any] = {}
    if change == "wrong_credential":
        cluster["api_server_token"] = "not-the-reader"  # noqa: S105
    if change == "closed_port":
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            cluster["api_server_url"] = f"https://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(api_config(kube, **cluster), payload(kube.token(pod)))
    assert refused.value.code == code


def test_two_tenants_configs_judge_the_same_agent_each_by_their_own(kube):
    # tenant A reads the API with its credential and label keys; B has no API access
    pod = Pod()
    kube.schedule(pod, pod_labels={"app": "spire-agent"}, node_labels={"pool": "batch"})
    token = kube.token(pod)
    a = attest(api_config(kube, allowed_node_label_keys=["pool"]), payload(token))
    b = attest(jwks_config(kube), payload(token))
    assert "k8s_psat:agent_node_label:pool:batch" in a.selectors
    assert not any("label" in s or "node_ip" in s for s in b.selectors)
    # a third tenant whose API credential is wrong gets a refusal, not B's fewer selectors
    with pytest.raises(NodeAttestationFailed) as refused:
        attest(api_config(kube, api_server_token="tenant-c-reader"), payload(token))
    assert refused.value.code == "attestor_unreachable"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"api_server_url": "http://k8s.example:6443"}, "invalid_url"),
        ({"api_server_url": "https://k8s.example:6443/?x=1"}, "invalid_url"),
        ({"api_server_url": "https://k8s.example:99999"}, "invalid_url"),
        ({"api_server_url": "https://k8s.example:6443"}, "missing_setting"),
        ({"api_server_token": "t"}, "missing_setting"),
        ({"allowed_pod_label_keys": ["app"]}, "missing_setting"),
        (
            {
                "api_server_url": "https://k8s.example",
                "api_server_token": "t",
                "allowed_node_label_keys": "pool",
            },
            "invalid_setting",
        ),
        ({"api_server_url": "https://k8s.example", "api_server_token": ""}, "invalid_setting"),
    ],
)
def test_api_server_settings_are_validated_with_stable_codes(extra, code):
    cluster = {"service_account_allow_list": ["a:b"], "jwks_url": "https://k8s/openid/v1/jwks"}
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("k8s_psat", {"clusters": {"prod": {**cluster, **extra}}})
    assert refused.value.code == code


def test_api_server_access_may_use_the_token_review_credential():
    config = catalog.validate_config(
        "k8s_psat",
        {
            "clusters": {
                "prod": {
                    "service_account_allow_list": ["a:b"],
                    "token_review_url": "https://k8s.example/apis/authentication.k8s.io/v1/tokenreviews",
                    "token_review_token": "reviewer",
                    "api_server_url": "https://k8s.example/",
                    "allowed_pod_label_keys": ["app"],
                }
            }
        },
    )
    assert config["clusters"]["prod"]["api_server_url"] == "https://k8s.example"
    assert config["clusters"]["prod"]["allowed_pod_label_keys"] == ["app"]


@pytest.mark.parametrize("verifier", ["jwks_url", "token_review"])
def test_use_pod_uid_for_agent_id_gives_each_agent_pod_its_own_id(kube, verifier):
    # SPIRE's setting for Deployment agents: several on one node, each its own agent ID
    config = jwks_config(kube) if verifier == "jwks_url" else review_config(kube)
    config["clusters"]["prod"]["use_pod_uid_for_agent_id"] = True
    first, second = Pod(), Pod()
    second.node_uid = first.node_uid
    paths = {attest(config, payload(kube.token(p))).agent_path for p in (first, second)}
    assert paths == {f"k8s_psat/prod/pod/{first.uid}", f"k8s_psat/prod/pod/{second.uid}"}
    with pytest.raises(InvalidAttestorConfig) as refused:
        config["clusters"]["prod"]["use_pod_uid_for_agent_id"] = "yes"
        catalog.validate_config("k8s_psat", config)
    assert refused.value.code == "invalid_setting"
