"""k8s and docker workload attestation through a real agent, its Workload API and py-spiffe.

A real `hallmark-agent run` (attested to the session's `hallmark up`) runs the docker and k8s
workload attestors against the Docker Engine API and kubelet stand-ins (tests/attestors).
The workload is this test process: the agent identifies it by SO_PEERCRED and reads its
cgroup file from a prepared proc tree (`proc_path`), which each test writes as the kernel
would for a process in a pod's container or in a plain Docker container.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from spiffe import WorkloadApiClient
from spiffe.workloadapi.errors import FetchX509SvidError

from hallmark.protos import workloadapi_pb2
from tests.attestors import cgroup_trees as trees
from tests.attestors.fake_docker import fake_docker
from tests.attestors.fake_kubelet import TOKEN, fake_kubelet
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
HEADER = ("workload.spiffe.io", "true")


@pytest.fixture(scope="module")
def node(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An agent with [workload_attestor.docker] and [workload_attestor.k8s], and two entries."""
    tenant = control_plane.signup("wlatt")
    td, token = tenant["trust_domain"], tenant["token"]
    alias = f"spiffe://{td}/node/k8s-worker"
    ids = {"k8s": f"spiffe://{td}/ns/payments/sa/billing", "docker": f"spiffe://{td}/ledger"}
    for spiffe_id, selectors in (
        (ids["k8s"], ["k8s:ns:payments", "k8s:sa:billing"]),
        (ids["docker"], ["docker:label:com.acme.app:ledger"]),
    ):
        answer = control_plane.call(
            token,
            "POST",
            "entries",
            json={"spiffe_id": spiffe_id, "parent_id": alias, "selectors": selectors},
        )
        assert answer.status_code == 201, answer.text
    join = control_plane.call(token, "POST", "join-tokens", json={"spiffe_id": alias}).json()
    work = tmp_path_factory.mktemp("wlatt-agent")
    proc = work / "proc"
    token_file = work / "token"
    token_file.write_text(TOKEN)
    with (
        tempfile.TemporaryDirectory(prefix="hm-e2e-docker-") as docker_dir,
        fake_docker(Path(docker_dir)) as daemon,
        fake_kubelet(work / "kubelet") as (kubelet, pki),
    ):
        config = work / "agent.toml"
        config.write_text(
            f"""resync_interval = 600

[workload_attestor.docker]
docker_socket_path = "unix://{daemon.server_address}"
proc_path = "{proc}"

[workload_attestor.k8s]
kubelet_secure_port = {kubelet.port}
kubelet_ca_path = "{pki.ca_path}"
token_path = "{token_file}"
node_name = "localhost"
proc_path = "{proc}"
max_poll_attempts = 3
poll_retry_interval = "10ms"
"""
        )
        _, socket_path = control_plane.start_agent(
            td,
            join["token"],
            work,
            "--trust-bundle-url",
            tenant["bundle_url"],
            "--config",
            str(config),
        )
        wait_for(socket_path.exists, 60, "the Workload API socket")
        yield {
            "ids": ids,
            "endpoint": f"unix:{socket_path}",
            "proc": proc,
            "kubelet": kubelet,
            "daemon": daemon,
        }


def become(node: dict[str, Any], cgroup: str) -> None:
    """Make this process's cgroup file (as the agent reads it) say `cgroup`."""
    trees.write_cgroup(node["proc"], os.getpid(), cgroup)


def fetch_spiffe_id(node: dict[str, Any]) -> str:
    def attempt() -> str | None:
        try:
            with WorkloadApiClient(socket_path=node["endpoint"]) as client:
                return str(client.fetch_x509_svid().spiffe_id)
        except Exception:  # noqa: BLE001 - py-spiffe raises its own types; the agent may be syncing
            return None

    return str(wait_for(attempt, 60, "an X.509-SVID"))


def raw_fetch(
    node: dict[str, Any], metadata: tuple[tuple[str, str], ...] = ()
) -> workloadapi_pb2.X509SVIDResponse | grpc.RpcError:
    """FetchX509SVID's first answer (or its error) over a plain gRPC channel."""
    with grpc.insecure_channel(node["endpoint"]) as channel:
        call = channel.unary_stream(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            request_serializer=workloadapi_pb2.X509SVIDRequest.SerializeToString,
            response_deserializer=workloadapi_pb2.X509SVIDResponse.FromString,
        )(workloadapi_pb2.X509SVIDRequest(), metadata=(HEADER, *metadata), timeout=30)
        try:
            return next(iter(call))
        except grpc.RpcError as exc:
            return exc


def test_a_pod_workload_is_matched_by_k8s_selectors_from_the_kubelet(node: dict[str, Any]) -> None:
    # given this process runs, as the kernel says, in the billing pod's container
    become(node, trees.K8S_DOCKER_V2)

    # then py-spiffe gets the identity registered for k8s:ns:payments + k8s:sa:billing
    assert fetch_spiffe_id(node) == node["ids"]["k8s"]
    assert node["kubelet"].requests[-1] == ("/pods", f"Bearer {TOKEN}")


def test_a_docker_workload_is_matched_by_a_docker_label(node: dict[str, Any]) -> None:
    become(node, trees.DOCKER_V2_SYSTEMD)

    assert fetch_spiffe_id(node) == node["ids"]["docker"]


def test_the_container_comes_from_the_kernels_file_not_from_the_caller(
    node: dict[str, Any],
) -> None:
    # given the kernel puts this process in the ledger container
    become(node, trees.DOCKER_V2_SYSTEMD)
    fetch_spiffe_id(node)  # the agent has synced

    # when it claims, in everything it sends, to be the billing pod's container
    claim = (
        ("x-container-id", trees.K8S_CONTAINER_ID),
        ("x-pod-uid", trees.POD_UID),
        ("k8s-ns", "payments"),
    )
    answer = raw_fetch(node, claim)

    # then it is the ledger container all the same
    assert isinstance(answer, workloadapi_pb2.X509SVIDResponse), answer
    assert [svid.spiffe_id for svid in answer.svids] == [node["ids"]["docker"]]

    # and a host process claiming the same gets nothing
    become(node, trees.HOST_SHELL_V2)
    refused = raw_fetch(node, claim)
    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_failing_attestor_fails_the_call_with_its_reason(node: dict[str, Any]) -> None:
    # given the kubelet stops accepting the agent's token
    become(node, trees.K8S_DOCKER_V2)
    kubelet = node["kubelet"]
    kubelet.tokens = set()
    try:
        # then the call fails, naming the attestor and why, instead of going on with
        # docker's selectors alone; py-spiffe's user sees the reason too
        refused = raw_fetch(node)
        with (
            WorkloadApiClient(socket_path=node["endpoint"]) as client,
            pytest.raises(FetchX509SvidError) as raised,
        ):
            client.fetch_x509_svid(timeout=30)
    finally:
        kubelet.tokens = {TOKEN}

    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.details().startswith("workload attestation failed: k8s: k8s_kubelet_refused")
    assert "k8s_kubelet_refused" in str(raised.value)


def test_a_container_docker_does_not_know_fails_the_call(node: dict[str, Any]) -> None:
    become(node, f"0::/system.slice/docker-{trees.UNKNOWN_ID}.scope\n")

    refused = raw_fetch(node)

    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert "docker_container_not_found" in refused.details()
