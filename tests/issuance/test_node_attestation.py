"""Node attestation through the real agent API: x509pop and k8s_psat, in two tenants."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from agent.config import AgentConfig
from agent.manager import AgentManager
from agent.state import AgentState
from attestors.node.aws_iid import AwsIidAgent
from attestors.node.azure_msi import AzureMsiAgent
from attestors.node.gcp_iit import GcpIitAgent
from attestors.node.k8s_psat import K8sPsatAgent
from attestors.node.x509pop import X509PopAgent, fingerprint
from hallmark.protos import agent_pb2
from hallmark.x509svid import make_csr
from issuance.models import Agent
from issuance.services.node_attestors import ALLOWED_NETWORKS_ENV
from tenants.models import AuditEvent
from tests.fakes.aws import AwsSigner, FakeImds, instance_document
from tests.fakes.clouds import FakeAzureVm, FakeGce
from tests.fakes.kubernetes import FakeKubernetes, Pod
from tests.fakes.pki import TestCA, pem, write_node_files
from tests.issuance.agentapi_harness import AgentApiClient, AgentIdentity, attest_call
from tests.issuance.conftest import bundle_pem, create_entry, create_join_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes().start()
    yield fake
    fake.stop()


def configure(handle: Any, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    response = handle.client.post(
        "/api/v1/node-attestors", {"type": kind, "config": config}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def psat_config(kube: FakeKubernetes) -> dict[str, Any]:
    return {
        "clusters": {
            "prod": {"service_account_allow_list": ["spire:spire-agent"], "jwks": kube.jwks()}
        }
    }


def client_for(agent_api: Any, handle: Any) -> AgentApiClient:
    return AgentApiClient(
        agent_api.port, server_name=handle.trust_domain, roots_pem=bundle_pem(handle)
    )


def refusal(agent_api: Any, handle: Any, attestor: Any) -> tuple[grpc.StatusCode, str]:
    client = client_for(agent_api, handle)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            client.attest_with(handle.trust_domain, attestor, AgentIdentity.fresh())
    finally:
        client.close()
    return refused.value.code(), (refused.value.details() or "").split(":", 1)[0]


def failure_codes(handle: Any, agent_api: Any) -> list[str]:
    """Codes of the tenant's audited attestation failures: rows of their own, and the rows
    the agent API aggregates per source and window (flushed here)."""
    asyncio.run_coroutine_threadsafe(
        agent_api.server.flush_attestation_failures(everything=True), agent_api.loop
    ).result(timeout=30)
    codes: list[str] = []
    for row in AuditEvent.objects.filter(
        tenant=handle.tenant, action="agent.attest", outcome="failure"
    ):
        if row.detail.get("aggregated"):
            # the first failure of the window has its own row; the rest are counted here
            for code, count in row.detail["codes"].items():
                codes += [code] * count
        else:
            codes.append(row.detail["code"])
    return sorted(codes)


def test_x509pop_agent_gets_spires_id_and_node_entries_alias_it(agent_api, tenant_a):
    # given tenant A trusts its fleet CA for x509pop, and a node entry on a CN selector
    fleet = TestCA("fleet A")
    configure(tenant_a, "x509pop", {"ca_bundle_pem": pem(fleet.cert)})
    node_id = f"spiffe://{tenant_a.trust_domain}/nodes/web-tier"
    create_entry(
        tenant_a,
        "/nodes/web-tier",
        parent_id=f"spiffe://{tenant_a.trust_domain}/spire/server",
        selectors=["x509pop:subject:cn:web-1"],
    )
    workload = create_entry(tenant_a, "/web", parent_id=node_id)
    cert, key = fleet.node("web-1")

    # when the node attests by proving possession of its certificate's key
    identity = AgentIdentity.fresh()
    client = client_for(agent_api, tenant_a)
    response = client.attest_with(tenant_a.trust_domain, X509PopAgent([cert], key), identity)
    client.close()

    # then its ID is SPIRE's, its selectors are kept, and the node entry aliases it
    expected = f"spiffe://{tenant_a.trust_domain}/spire/agent/x509pop/{fingerprint(cert)}"
    assert response.spiffe_id == expected
    with tenant_a.schema():
        agent = Agent.objects.get(spiffe_id=expected)
        assert "x509pop:subject:cn:web-1" in agent.selectors
        assert agent.node_aliases == [node_id]
        assert agent.attestation_type == "x509pop" and agent.can_reattest
    mtls = AgentApiClient(
        agent_api.port,
        server_name=tenant_a.trust_domain,
        roots_pem=bundle_pem(tenant_a),
        identity=identity,
    )
    try:
        synced = mtls.sync()
    finally:
        mtls.close()
    assert workload["id"] in {e.id for e in synced.entries}
    attested = AuditEvent.objects.get(
        tenant=tenant_a.tenant, action="agent.attest", target=expected
    )
    assert attested.detail["attestation_type"] == "x509pop"


def test_tenant_a_ca_never_attests_into_tenant_b(agent_api, tenant_a, tenant_b):
    # given each tenant trusts its own fleet CA
    fleet_a, fleet_b = TestCA("fleet A"), TestCA("fleet B")
    configure(tenant_a, "x509pop", {"ca_bundle_pem": pem(fleet_a.cert)})
    cert, key = fleet_a.node("a-node")

    # when a node of A attests to B, which has no x509pop, then to B with its own CA
    assert refusal(agent_api, tenant_b, X509PopAgent([cert], key)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "attestor_not_configured",
    )
    configure(tenant_b, "x509pop", {"ca_bundle_pem": pem(fleet_b.cert)})
    assert refusal(agent_api, tenant_b, X509PopAgent([cert], key)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "untrusted_certificate",
    )

    # then nothing was attested in B and each refusal is audited there with its reason
    with tenant_b.schema():
        assert not Agent.objects.exists()
    assert "attestor_not_configured" in failure_codes(tenant_b, agent_api)
    assert "untrusted_certificate" in failure_codes(tenant_b, agent_api)
    assert failure_codes(tenant_a, agent_api) == []


def test_wrong_key_is_refused_and_audited(agent_api, tenant_a):
    fleet = TestCA("fleet A")
    configure(tenant_a, "x509pop", {"ca_bundle_pem": pem(fleet.cert)})
    cert, _ = fleet.node("stolen-cert")
    _, other = fleet.node("thief")
    assert refusal(agent_api, tenant_a, X509PopAgent([cert], other)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "challenge_failed",
    )
    assert failure_codes(tenant_a, agent_api) == ["challenge_failed"]


def test_unanswered_challenge_attests_nothing(agent_api, tenant_a):
    fleet = TestCA("fleet A")
    configure(tenant_a, "x509pop", {"ca_bundle_pem": pem(fleet.cert)})
    cert, key = fleet.node("silent")
    client = client_for(agent_api, tenant_a)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            attest_call(
                client.stub,
                agent_pb2.AttestAgentRequest(
                    trust_domain=tenant_a.trust_domain,
                    attestation_type="x509pop",
                    attestation_data=X509PopAgent([cert], key).payload(),
                    csr=make_csr(AgentIdentity.fresh().key),
                ),
                metadata=client.metadata,
            )
    finally:
        client.close()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "attestation_incomplete" in (refused.value.details() or "")
    with tenant_a.schema():
        assert not Agent.objects.exists()
    assert failure_codes(tenant_a, agent_api) == ["attestation_incomplete"]


def test_x509pop_agent_re_attests_under_its_id_unless_banned(agent_api, tenant_a):
    # given an x509pop agent attested once
    fleet = TestCA("fleet A")
    configure(tenant_a, "x509pop", {"ca_bundle_pem": pem(fleet.cert)})
    cert, key = fleet.node("rebooted")
    first, second = AgentIdentity.fresh(), AgentIdentity.fresh()
    client = client_for(agent_api, tenant_a)
    client.attest_with(tenant_a.trust_domain, X509PopAgent([cert], key), first)

    # when it attests again (its SVID could not be renewed), it keeps its ID with a new SVID
    client.attest_with(tenant_a.trust_domain, X509PopAgent([cert], key), second)
    client.close()
    assert first.spiffe_id == second.spiffe_id
    with tenant_a.schema():
        agent = Agent.objects.get(spiffe_id=first.spiffe_id)
        assert agent.serial == format(second.chain[0].serial_number, "x")
        agent.banned = True
        agent.save()

    # then a banned agent cannot come back by re-attesting
    assert refusal(agent_api, tenant_a, X509PopAgent([cert], key)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "agent_banned",
    )


def test_join_token_agent_cannot_re_attest(agent_api, tenant_a):
    token = create_join_token(tenant_a)
    client = client_for(agent_api, tenant_a)
    client.attest(tenant_a.trust_domain, token["token"], AgentIdentity.fresh())
    with pytest.raises(grpc.RpcError) as refused:
        client.attest(tenant_a.trust_domain, token["token"], AgentIdentity.fresh())
    client.close()
    assert "join_token_used" in (refused.value.details() or "")


def test_k8s_psat_token_attests_once_and_expired_tokens_are_refused(
    agent_api, tenant_a, kube, tmp_path
):
    # given tenant A trusts cluster "prod" and an agent pod's projected token
    configure(tenant_a, "k8s_psat", psat_config(kube))
    pod = Pod()
    token_file = tmp_path / "token"
    token_file.write_text(kube.token(pod))
    attestor = K8sPsatAgent("prod", str(token_file))

    # when the agent attests, its ID names the cluster and node, with SPIRE's selectors
    client = client_for(agent_api, tenant_a)
    identity = AgentIdentity.fresh()
    response = client.attest_with(tenant_a.trust_domain, attestor, identity)
    client.close()
    assert response.spiffe_id == (
        f"spiffe://{tenant_a.trust_domain}/spire/agent/k8s_psat/prod/{pod.node_uid}"
    )
    with tenant_a.schema():
        agent = Agent.objects.get(spiffe_id=response.spiffe_id)
        assert f"k8s_psat:agent_pod_name:{pod.name}" in agent.selectors

    # then the same token replayed is refused, as is an expired one, each audited
    assert refusal(agent_api, tenant_a, attestor) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "proof_replayed",
    )
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    token_file.write_text(kube.token(pod, issued_at=old))
    assert refusal(agent_api, tenant_a, attestor) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "token_expired",
    )
    # a fresh token (kubelet rotates it) re-attests the same agent
    token_file.write_text(kube.token(pod))
    client = client_for(agent_api, tenant_a)
    again = client.attest_with(tenant_a.trust_domain, attestor, AgentIdentity.fresh())
    client.close()
    assert again.spiffe_id == response.spiffe_id
    assert {"proof_replayed", "token_expired"} <= set(failure_codes(tenant_a, agent_api))


def test_cluster_of_tenant_a_never_attests_into_tenant_b(
    agent_api, tenant_a, tenant_b, tmp_path, monkeypatch
):
    # given two clusters, each trusted by one tenant, both named "prod"; A also reads its
    # cluster's API server (SPIRE's kubeconfig lookups: the agent's Pod and Node)
    cluster_a, cluster_b = FakeKubernetes().start(), FakeKubernetes()
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "127.0.0.0/8")
    config_a = psat_config(cluster_a)
    config_a["clusters"]["prod"].update(
        api_server_url=cluster_a.url,
        api_server_token=cluster_a.reviewer_token,
        ca_bundle_pem=cluster_a.ca_pem,
        allowed_pod_label_keys=["app"],
    )
    configure(tenant_a, "k8s_psat", config_a)
    configure(tenant_b, "k8s_psat", psat_config(cluster_b))
    pod = Pod()
    cluster_a.schedule(pod, pod_labels={"app": "spire-agent"}, host_ip="10.0.40.2")
    token_file = tmp_path / "token"
    token_file.write_text(cluster_a.token(pod))

    try:
        # when A's agent presents its token to B, it is refused there
        code, reason = refusal(agent_api, tenant_b, K8sPsatAgent("prod", str(token_file)))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "unknown_signing_key")
        with tenant_b.schema():
            assert not Agent.objects.exists()
        # and the same token still attests into A (the refusal in B did not spend it), with
        # the selectors A's API access gives
        client = client_for(agent_api, tenant_a)
        response = client.attest_with(
            tenant_a.trust_domain, K8sPsatAgent("prod", str(token_file)), AgentIdentity.fresh()
        )
        client.close()
    finally:
        cluster_a.stop()
    assert response.spiffe_id.endswith(f"/spire/agent/k8s_psat/prod/{pod.node_uid}")
    with tenant_a.schema():
        selectors = Agent.objects.get(spiffe_id=response.spiffe_id).selectors
    assert {"k8s_psat:agent_pod_label:app:spire-agent", "k8s_psat:agent_node_ip:10.0.40.2"} <= set(
        selectors
    )


def test_node_entry_created_after_attestation_aliases_the_agent_at_its_next_sync(
    agent_api, tenant_a
):
    # given an x509pop agent attested before any node entry exists
    fleet = TestCA("fleet A")
    configure(tenant_a, "x509pop", {"ca_bundle_pem": pem(fleet.cert)})
    cert, key = fleet.node("db-1", dns=("db-1.fleet.internal",))
    identity = AgentIdentity.fresh()
    client = client_for(agent_api, tenant_a)
    client.attest_with(tenant_a.trust_domain, X509PopAgent([cert], key), identity)
    client.close()
    mtls = AgentApiClient(
        agent_api.port,
        server_name=tenant_a.trust_domain,
        roots_pem=bundle_pem(tenant_a),
        identity=identity,
    )
    try:
        first = mtls.sync()
        assert list(first.node_aliases) == []

        # when a node entry on its SAN selector and a workload under it are registered
        node = create_entry(
            tenant_a,
            "/nodes/databases",
            parent_id=f"spiffe://{tenant_a.trust_domain}/spire/server",
            selectors=["x509pop:san:dns:db-1.fleet.internal"],
        )
        workload = create_entry(tenant_a, "/postgres", parent_id=node["spiffe_id"])
        later = mtls.sync(since_revision=first.revision)

        # then the next sync names the alias and brings the workload entry
        assert list(later.node_aliases) == [node["spiffe_id"]]
        assert workload["id"] in {e.id for e in later.entries}

        # and deleting the node entry takes the alias (and the workload) away
        assert tenant_a.client.delete(f"/api/v1/entries/{node['id']}").status_code == 204
        gone = mtls.sync(since_revision=later.revision)
        assert list(gone.node_aliases) == []
        assert workload["id"] not in {e.id for e in gone.entries}
    finally:
        mtls.close()


def test_aws_iid_document_attests_once_and_only_into_the_tenant_allowing_the_account(
    agent_api, tenant_a, tenant_b
):
    # given tenant A allows account 123456789012, tenant B another account, same AWS certs
    signer = AwsSigner()
    configure(
        tenant_a,
        "aws_iid",
        {"aws_certificates_pem": signer.pem, "account_allow_list": ["123456789012"]},
    )
    configure(
        tenant_b,
        "aws_iid",
        {"aws_certificates_pem": signer.pem, "account_allow_list": ["210987654321"]},
    )
    imds = FakeImds(signer, instance_document(account="123456789012")).start()
    try:
        attestor = AwsIidAgent(imds.url)
        # when the instance attests to B, it is refused; to A, it is attested
        assert refusal(agent_api, tenant_b, attestor) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "account_not_allowed",
        )
        client = client_for(agent_api, tenant_a)
        response = client.attest_with(tenant_a.trust_domain, attestor, AgentIdentity.fresh())
        client.close()
        assert "/spire/agent/aws_iid/123456789012/us-west-2/i-" in response.spiffe_id

        # then the same document (replayed, or the instance again) binds to that agent only
        assert refusal(agent_api, tenant_a, attestor) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "agent_already_attested",
        )
    finally:
        imds.stop()
    assert "account_not_allowed" in failure_codes(tenant_b, agent_api)
    with tenant_b.schema():
        assert not Agent.objects.exists()


def test_agent_process_re_attests_with_x509pop_when_its_svid_cannot_be_renewed(
    agent_api, tenant_a, tmp_path
):
    # given an agent (the agent's own manager and client) attested with x509pop
    fleet = TestCA("fleet A")
    configure(tenant_a, "x509pop", {"ca_bundle_pem": pem(fleet.cert)})
    cert, key = fleet.node("phoenix")
    cert_path, key_path = write_node_files(tmp_path, [cert], key)
    (tmp_path / "bundle.pem").write_bytes(bundle_pem(tenant_a))
    config = AgentConfig.from_mapping(
        {
            "server": f"127.0.0.1:{agent_api.port}",
            "trust_domain": tenant_a.trust_domain,
            "data_dir": str(tmp_path / "data"),
            "socket": str(tmp_path / "api.sock"),
            "trust_bundle": str(tmp_path / "bundle.pem"),
            "node_attestor": {
                "x509pop": {"certificate_path": str(cert_path), "private_key_path": str(key_path)}
            },
        }
    )

    def evict() -> None:
        agents = tenant_a.client.get("/api/v1/agents").json()
        assert tenant_a.client.delete(f"/api/v1/agents/{agents[0]['id']}").status_code == 204

    async def scenario() -> tuple[str, str, str]:
        manager = AgentManager(config, AgentState())
        await manager.bootstrap()
        first = str(manager.agent_id)
        serial = format(manager._svid.leaf.serial_number, "x")  # type: ignore[union-attr]
        # when the tenant evicts it, its renewal is refused and it proves the node again
        await asyncio.to_thread(evict)
        await manager._renew()
        await manager.sync_once()
        return first, serial, str(manager.agent_id)

    first, old_serial, again = asyncio.run(asyncio.wait_for(scenario(), timeout=60))

    # then it is the same agent ID, known again, with a new SVID
    assert first == again
    assert "/spire/agent/x509pop/" in again
    with tenant_a.schema():
        agent = Agent.objects.get(spiffe_id=again)
    assert agent.serial != old_serial


def test_gcp_iit_and_azure_msi_tokens_attest_once_and_only_in_their_tenant(
    agent_api, tenant_a, tenant_b
):
    # given tenant A allows a GCP project and an Azure AD tenant; B allows others
    gce, vm = FakeGce().start(), FakeAzureVm().start()
    try:
        configure(
            tenant_a,
            "gcp_iit",
            {"projectid_allow_list": [gce.project], "jwks": gce.google.jwks()},
        )
        configure(tenant_a, "azure_msi", {"tenants": {vm.tenant_id: {"jwks": vm.azure_ad.jwks()}}})
        configure(
            tenant_b,
            "gcp_iit",
            {"projectid_allow_list": ["b-project"], "jwks": gce.google.jwks()},
        )
        gcp = GcpIitAgent(identity_token_host=gce.metadata.url.removeprefix("http://"))
        azure = AzureMsiAgent(endpoint=vm.imds.url)
        gcp_token = gcp.payload()

        class Recorded(GcpIitAgent):
            def payload(self) -> bytes:
                return gcp_token

        # when they attest to B, they are refused; to A, attested
        assert refusal(agent_api, tenant_b, Recorded()) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "project_not_allowed",
        )
        assert refusal(agent_api, tenant_b, azure) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "attestor_not_configured",
        )
        client = client_for(agent_api, tenant_a)
        by_gcp = client.attest_with(tenant_a.trust_domain, Recorded(), AgentIdentity.fresh())
        by_azure = client.attest_with(tenant_a.trust_domain, azure, AgentIdentity.fresh())
        client.close()
        assert by_gcp.spiffe_id.endswith(f"/spire/agent/gcp_iit/{gce.project}/{gce.instance_id}")
        assert by_azure.spiffe_id.endswith(f"/azure_msi/{vm.tenant_id}/{vm.principal_id}")

        # then the same GCP token is refused, and a new one of that instance (trust on first use)
        assert refusal(agent_api, tenant_a, Recorded()) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "proof_replayed",
        )
        assert refusal(agent_api, tenant_a, gcp) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "agent_already_attested",
        )
    finally:
        gce.stop()
        vm.stop()
    with tenant_b.schema():
        assert not Agent.objects.exists()


def test_sshpop_host_certificate_attests_only_where_its_ssh_ca_is_trusted(
    agent_api, tenant_a, tenant_b
):
    # given tenant A trusts its SSH CA for sshpop, tenant B another SSH CA
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from attestors.node.sshpop import SshPopAgent
    from tests.attestors.test_node_sshpop import host_certificate, openssh

    ca_a, ca_b = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    configure(tenant_a, "sshpop", {"cert_authorities": [openssh(ca_a)]})
    configure(tenant_b, "sshpop", {"cert_authorities": [openssh(ca_b)]})
    host = ed25519.Ed25519PrivateKey.generate()
    attestor = SshPopAgent(host_certificate(ca_a, host), host)

    # when the host attests to B it is refused; to A it is attested through the challenge
    assert refusal(agent_api, tenant_b, attestor) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "untrusted_certificate",
    )
    client = client_for(agent_api, tenant_a)
    response = client.attest_with(tenant_a.trust_domain, attestor, AgentIdentity.fresh())
    client.close()
    assert "/spire/agent/sshpop/" in response.spiffe_id
    with tenant_b.schema():
        assert not Agent.objects.exists()


class OnePayload:
    """An agent half whose payload is made once (B refuses it before any challenge; A then
    gets the same TPM evidence): a TPM conversation less."""

    def __init__(self, agent: Any) -> None:
        self.agent, self.type, self.data = agent, agent.type, b""

    def payload(self) -> bytes:
        self.data = self.data or self.agent.payload()
        return self.data

    def respond(self, challenge: bytes) -> bytes:
        return bytes(self.agent.respond(challenge))


def test_tpm_devid_attests_only_where_its_devid_ca_is_trusted(
    agent_api, tenant_a, tenant_b, tmp_path
):
    # given a real TPM (swtpm) whose EK a maker certified and whose DevID fleet A's CA
    # certified; tenant A trusts fleet A's DevID CA, tenant B its own, both the maker
    from attestors.node.tpm_devid import TpmDevidAgent
    from tests.fakes.swtpm import Swtpm

    maker, fleet_a, fleet_b = TestCA("tpm maker"), TestCA("fleet A"), TestCA("fleet B")
    tpm = Swtpm(tmp_path / "swtpm").start()
    try:
        tpm.provision_ek_certificate(maker, tmp_path / "maker")
        # (an RSA DevID under a persistent parent, the EK certificate given as a file)
        settings = tpm.provision_devid(
            fleet_a,
            "tpm-node-1",
            tmp_path / "devid",
            persistent_parent="0x81000001",
            algorithm="rsa",
        )
        settings["ek_certificate_path"] = str(tmp_path / "maker" / "ek.der")
        attestor = OnePayload(TpmDevidAgent.from_settings(settings))
        configure(
            tenant_a,
            "tpm_devid",
            {"devid_ca_pem": pem(fleet_a.cert), "endorsement_ca_pem": pem(maker.cert)},
        )
        configure(
            tenant_b,
            "tpm_devid",
            {"devid_ca_pem": pem(fleet_b.cert), "endorsement_ca_pem": pem(maker.cert)},
        )

        # when the node attests to B it is refused; to A it is attested through the TPM
        assert refusal(agent_api, tenant_b, attestor) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "untrusted_certificate",
        )
        client = client_for(agent_api, tenant_a)
        response = client.attest_with(tenant_a.trust_domain, attestor, AgentIdentity.fresh())
        client.close()
    finally:
        tpm.stop()

    # then A has the agent with SPIRE's ID and selectors; B has none and audited why
    assert "/spire/agent/tpm_devid/" in response.spiffe_id
    with tenant_a.schema():
        agent = Agent.objects.get(spiffe_id=response.spiffe_id)
        assert "tpm_devid:subject:cn:tpm-node-1" in agent.selectors
        assert agent.attestation_type == "tpm_devid"
    with tenant_b.schema():
        assert not Agent.objects.exists()
    assert failure_codes(tenant_b, agent_api) == ["untrusted_certificate"]
