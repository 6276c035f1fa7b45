"""Pods come and go in the fake cluster; a py-spiffe workload behind a real agent gets and
loses its SVID accordingly.

The chain is the production one: the fake Kubernetes API → `hallmark-registrar` (a real
process, the console script, with a kubeconfig and a registrar token) → the plane's batch API
→ the agent's sync → the agent's k8s workload attestor (against the fake kubelet) → the
Workload API → py-spiffe. The agent joined with a token naming the node alias the registrar
puts pods under, `spiffe://<td>/k8s-node/<cluster>/<node>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from spiffe import WorkloadApiClient

from hallmark.protos import workloadapi_pb2
from tests.attestors import cgroup_trees as trees
from tests.attestors.fake_kubelet import NODE_NAME, TOKEN, billing_pod, fake_kubelet, other_pod
from tests.e2e.conftest import wait_for
from tests.e2e.registrar.conftest import CLUSTER, SPIFFE_ID_TEMPLATE, make_tenant
from tests.registrar.fake_kube_api import (
    CLUSTER_SPIFFE_IDS,
    NAMESPACES,
    PODS,
    cluster_spiffe_id,
    fake_kube_api,
    namespace,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def node(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tenant = make_tenant(control_plane, "regagent")
    td = tenant.trust_domain
    alias = f"spiffe://{td}/k8s-node/{CLUSTER}/{NODE_NAME}"
    join = control_plane.call(tenant.owner, "POST", "join-tokens", json={"spiffe_id": alias})
    assert join.status_code == 201, join.text
    work = tmp_path_factory.mktemp("registrar-agent")
    proc = work / "proc"
    (work / "kubelet-token").write_text(TOKEN)
    (work / "registrar-token").write_text(tenant.registrar)
    with (
        fake_kubelet(work / "kubelet") as (kubelet, pki),
        fake_kube_api(work / "apiserver") as kube,
    ):
        kubelet.pods = [other_pod()]  # the billing pod is not there yet
        kube.add(NAMESPACES, namespace("payments"))
        kube.add(
            CLUSTER_SPIFFE_IDS,
            cluster_spiffe_id(
                "default",
                spiffeIDTemplate=SPIFFE_ID_TEMPLATE,
                workloadSelectorTemplates=[
                    "k8s:ns:{{ .PodMeta.Namespace }}",
                    "k8s:sa:{{ .PodSpec.ServiceAccountName }}",
                ],
            ),
        )
        config = work / "agent.toml"
        config.write_text(
            f"""resync_interval = 600

[workload_attestor.k8s]
kubelet_secure_port = {kubelet.port}
kubelet_ca_path = "{pki.ca_path}"
token_path = "{work / "kubelet-token"}"
node_name = "localhost"
proc_path = "{proc}"
max_poll_attempts = 3
poll_retry_interval = "10ms"
"""
        )
        _, socket_path = control_plane.start_agent(
            td,
            join.json()["token"],
            work / "agent",
            "--trust-bundle-url",
            f"{control_plane.http}/bundle/{td}",
            "--config",
            str(config),
        )
        wait_for(socket_path.exists, 60, "the Workload API socket")
        log = open(work / "registrar.log", "ab")  # noqa: SIM115
        registrar = subprocess.Popen(
            [
                str(BIN / "hallmark-registrar"),
                "--server",
                control_plane.http,
                "--token-file",
                str(work / "registrar-token"),
                "--cluster-name",
                CLUSTER,
                "--kubeconfig",
                str(kube.kubeconfig(work)),
                "--settle",
                "0.05",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "HALLMARK_TOKEN"},
        )
        try:
            yield {
                "kube": kube,
                "kubelet": kubelet,
                "tenant": tenant,
                "endpoint": f"unix:{socket_path}",
                "proc": proc,
                "spiffe_id": f"spiffe://{td}/ns/payments/sa/billing",
                "log": work / "registrar.log",
            }
        finally:
            registrar.terminate()
            registrar.wait(timeout=10)
            log.close()


def svids(node: dict[str, Any]) -> list[str] | None:
    """The SPIFFE IDs the Workload API gives this process now ([] when it has none)."""
    with grpc.insecure_channel(node["endpoint"]) as channel:
        call = channel.unary_stream(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            request_serializer=workloadapi_pb2.X509SVIDRequest.SerializeToString,
            response_deserializer=workloadapi_pb2.X509SVIDResponse.FromString,
        )(workloadapi_pb2.X509SVIDRequest(), metadata=(("workload.spiffe.io", "true"),), timeout=5)
        try:
            return [svid.spiffe_id for svid in next(iter(call)).svids]
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                return []  # no identity for this caller
            return None  # not settled (a sync under way)


def py_spiffe_id(node: dict[str, Any]) -> str | None:
    try:
        with WorkloadApiClient(socket_path=node["endpoint"]) as client:
            return str(client.fetch_x509_svid(timeout=5).spiffe_id)
    except Exception:  # noqa: BLE001 - py-spiffe raises its own types while the agent syncs
        return None


def test_a_workload_gets_its_svid_when_its_pod_appears_and_loses_it_when_it_goes(
    node: dict[str, Any],
) -> None:
    kube, kubelet = node["kube"], node["kubelet"]
    # given this process runs, as the kernel says, in the billing pod's container
    trees.write_cgroup(node["proc"], os.getpid(), trees.K8S_DOCKER_V2)
    assert not node["tenant"].entries()  # no pod, no entry

    # when the billing pod is scheduled on the agent's node (the API server and its kubelet)
    pod = billing_pod()
    kubelet.pods = [other_pod(), pod]
    kube.add(PODS, pod)

    # then py-spiffe receives the identity the registrar registered for it
    assert wait_for(lambda: py_spiffe_id(node), 60, "the pod's SVID") == node["spiffe_id"]

    # when the pod is deleted (the kubelet still runs it through its grace period)
    kube.delete(PODS, pod)

    # then its entry is gone from the plane and the workload gets no SVID any more
    wait_for(lambda: svids(node) == [], 60, "the SVID to go")
    assert not [e for e in node["tenant"].entries() if "k8s:sa:billing" in e["selectors"]]
    kubelet.pods = [other_pod()]

    assert "reconciled" in node["log"].read_text()
