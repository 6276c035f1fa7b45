"""Node attestors end to end: agents attested by x509pop and k8s_psat against `hallmark up`,
each serving a py-spiffe workload; replayed and expired proofs refused; tenants kept apart."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from attestors.node.k8s_psat import K8sPsatAgent
from attestors.node.x509pop import X509PopAgent
from tests.e2e.conftest import ControlPlaneProcess
from tests.e2e.test_abuse import _anonymous, _refusal
from tests.e2e.test_walking_skeleton import _fetch_x509_context
from tests.fakes.kubernetes import FakeKubernetes, Pod
from tests.fakes.pki import TestCA, pem, write_node_files
from tests.issuance.agentapi_harness import AgentIdentity

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def _configure(plane: ControlPlaneProcess, tenant: dict[str, Any], kind: str, config: Any) -> None:
    answer = plane.call(
        tenant["token"], "POST", "node-attestors", json={"type": kind, "config": config}
    )
    assert answer.status_code == 201, answer.text


def _node_entry_and_workload(
    plane: ControlPlaneProcess, tenant: dict[str, Any], selector: str
) -> str:
    td = tenant["trust_domain"]
    node = plane.call(
        tenant["token"],
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{td}/nodes/fleet",
            "parent_id": f"spiffe://{td}/spire/server",
            "selectors": [selector],
        },
    )
    assert node.status_code == 201, node.text
    workload = f"spiffe://{td}/e2e/workload"
    entry = plane.call(
        tenant["token"],
        "POST",
        "entries",
        json={
            "spiffe_id": workload,
            "parent_id": f"spiffe://{td}/nodes/fleet",
            "selectors": [f"unix:uid:{os.getuid()}"],
        },
    )
    assert entry.status_code == 201, entry.text
    return workload


def _start(
    plane: ControlPlaneProcess, tenant: dict[str, Any], work: Path, attestor_toml: str
) -> Path:
    work.mkdir(parents=True)
    (work / "bundle.json").write_bytes(plane.call(tenant["token"], "GET", "bundle").content)
    (work / "agent.toml").write_text(f'trust_bundle = "{work / "bundle.json"}"\n\n{attestor_toml}')
    _, socket_path = plane.start_agent(
        tenant["trust_domain"], None, work, "--config", str(work / "agent.toml")
    )
    return socket_path


def _attest_refusal(
    plane: ControlPlaneProcess, tenant: dict[str, Any], attestor: Any
) -> tuple[grpc.StatusCode, str]:
    client = _anonymous(plane, tenant)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            client.attest_with(tenant["trust_domain"], attestor, AgentIdentity.fresh())
    finally:
        client.close()
    return _refusal(refused.value)


def test_x509pop_agent_serves_a_workload_and_never_attests_into_another_tenant(
    control_plane, tmp_path
) -> None:
    # given tenant A trusting its fleet CA, a node entry on the CN and a workload under it
    tenant_a, tenant_b = control_plane.signup("popa"), control_plane.signup("popb")
    fleet = TestCA("fleet of A")
    _configure(control_plane, tenant_a, "x509pop", {"ca_bundle_pem": pem(fleet.cert)})
    _configure(control_plane, tenant_b, "x509pop", {"ca_bundle_pem": pem(TestCA("B").cert)})
    workload = _node_entry_and_workload(control_plane, tenant_a, "x509pop:subject:cn:e2e-node")
    cert, key = fleet.node("e2e-node")
    cert_path, key_path = write_node_files(tmp_path, [cert], key)

    # when an agent configured with [node_attestor.x509pop] starts
    socket_path = _start(
        control_plane,
        tenant_a,
        tmp_path / "agent",
        f'[node_attestor.x509pop]\ncertificate_path = "{cert_path}"\n'
        f'private_key_path = "{key_path}"\n',
    )

    # then a py-spiffe workload gets its SVID through the node entry's alias
    context = _fetch_x509_context(socket_path)
    assert str(context.default_svid.spiffe_id) == workload

    # and the same node certificate is refused by tenant B
    assert _attest_refusal(control_plane, tenant_b, X509PopAgent([cert], key)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "untrusted_certificate",
    )


def test_k8s_psat_agent_serves_a_workload_and_replayed_or_expired_tokens_are_refused(
    control_plane, tmp_path
) -> None:
    # given tenant A trusting cluster "prod" (its published keys) and an agent pod's token
    tenant = control_plane.signup("psat")
    kube = FakeKubernetes()
    _configure(
        control_plane,
        tenant,
        "k8s_psat",
        {
            "clusters": {
                "prod": {
                    "service_account_allow_list": ["spire:spire-agent"],
                    "audience": ["hallmark"],
                    "jwks": kube.jwks(),
                }
            }
        },
    )
    pod = Pod()
    workload = _node_entry_and_workload(control_plane, tenant, "k8s_psat:agent_ns:spire")
    token_path = tmp_path / "token"
    token_path.write_text(kube.token(pod, audience=["hallmark"]))

    # when an agent configured with [node_attestor.k8s_psat] starts
    socket_path = _start(
        control_plane,
        tenant,
        tmp_path / "agent",
        f'[node_attestor.k8s_psat]\ncluster = "prod"\ntoken_path = "{token_path}"\n',
    )

    # then a py-spiffe workload gets its SVID
    context = _fetch_x509_context(socket_path)
    assert str(context.default_svid.spiffe_id) == workload

    # and the token it used cannot attest again, nor can an expired one
    replay = K8sPsatAgent("prod", str(token_path))
    assert _attest_refusal(control_plane, tenant, replay) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "proof_replayed",
    )
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    expired_path = tmp_path / "expired-token"
    expired_path.write_text(kube.token(pod, audience=["hallmark"], issued_at=old))
    assert _attest_refusal(control_plane, tenant, K8sPsatAgent("prod", str(expired_path))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "token_expired",
    )
    events = control_plane.call(
        tenant["token"], "GET", "audit-events", params={"action": "agent.attest"}
    ).json()
    rows = events["results"] if isinstance(events, dict) else events
    # the first failure of a window from one source is audited at once (the rest are
    # aggregated per window)
    codes = {r["detail"].get("code") for r in rows if r["outcome"] == "failure"}
    assert "proof_replayed" in codes
