"""The k8s workload attestor against a kubelet stand-in (HTTPS, bearer tokens, real PodList)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from attestors.workload.k8s import K8sAttestor
from attestors.workload.plugin import AttestorConfigError, PluginError
from hallmark.selectors import parse_selectors
from tests.attestors import cgroup_trees as trees
from tests.attestors.fake_kubelet import (
    NODE_NAME,
    TOKEN,
    FakeKubelet,
    KubeletPki,
    billing_pod,
    fake_kubelet,
    make_pki,
    other_pod,
)

PID = 27182
BILLING = [
    "k8s:ns:payments",
    "k8s:sa:billing",
    f"k8s:node-name:{NODE_NAME}",
    f"k8s:pod-uid:{trees.POD_UID}",
    "k8s:pod-name:billing-7d9f8b6c5-x2x7k",
    "k8s:pod-label:app:billing",
    "k8s:pod-label:pod-template-hash:7d9f8b6c5",
    "k8s:pod-label:tier:backend",
    "k8s:pod-owner:ReplicaSet:billing-7d9f8b6c5",
    "k8s:pod-owner-uid:ReplicaSet:0b7c3f2e-9a1d-4c5e-8f6a-2d4b6c8e0f1a",
    "k8s:pod-image:ghcr.io/acme/billing:1.4.2",
    "k8s:pod-image:ghcr.io/acme/billing@sha256:"
    "5d7f9b1c3e5a7d9f1b3c5e7a9d1f3b5c7e9a1d3f5b7c9e1a3d5f7b9c1e3a5d7f",
    "k8s:pod-image-count:1",
    "k8s:pod-init-image:ghcr.io/acme/billing-migrate:1.4.2",
    "k8s:pod-init-image:ghcr.io/acme/billing-migrate@sha256:"
    "8a0c2e4f6b8d0a2c4e6f8b0d2a4c6e8f0b2d4a6c8e0f2b4d6a8c0e2f4b6d8a0c",
    "k8s:pod-init-image-count:1",
]
CONTAINER = [
    "k8s:container-name:billing",
    "k8s:container-image:ghcr.io/acme/billing:1.4.2",
    "k8s:container-image:ghcr.io/acme/billing@sha256:"
    "5d7f9b1c3e5a7d9f1b3c5e7a9d1f3b5c7e9a1d3f5b7c9e1a3d5f7b9c1e3a5d7f",
]


@pytest.fixture(scope="module")
def kubelet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeKubelet, KubeletPki]]:
    with fake_kubelet(tmp_path_factory.mktemp("kubelet")) as running:
        yield running


@pytest.fixture
def server(kubelet: tuple[FakeKubelet, KubeletPki]) -> Iterator[FakeKubelet]:
    fake = kubelet[0]
    yield fake
    fake.pods = [other_pod(), billing_pod()]
    fake.hide_container_status = 0
    fake.tokens = {TOKEN}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def attestor(
    kubelet: tuple[FakeKubelet, KubeletPki], proc: Path, token: Path, **extra: object
) -> K8sAttestor:
    fake, pki = kubelet
    table: dict[str, object] = {
        "kubelet_secure_port": fake.port,
        "kubelet_ca_path": str(pki.ca_path),
        "token_path": str(token),
        "node_name": "localhost",
        "proc_path": str(proc),
        "poll_retry_interval": "1ms",
        **extra,
    }
    return K8sAttestor(table)


@pytest.mark.parametrize(
    ("cgroup", "runtime"),
    [
        (trees.K8S_CONTAINERD_V2, "containerd"),
        (trees.K8S_CONTAINERD_V1_CGROUPFS, "containerd"),
        (trees.K8S_DOCKER_V2, "docker"),
        (trees.K8S_CRIO_V2, "cri-o"),
    ],
    ids=["containerd-v2", "containerd-v1", "cri-dockerd-v2", "cri-o-v2"],
)
def test_a_pod_container_gets_spire_k8s_selectors(
    kubelet: tuple[FakeKubelet, KubeletPki],
    server: FakeKubelet,
    tmp_path: Path,
    token_file: Path,
    cgroup: str,
    runtime: str,
) -> None:
    # given a process in the billing pod's container on a node with this runtime
    server.pods = [other_pod(), billing_pod(runtime)]
    trees.write_cgroup(tmp_path, PID, cgroup)

    # when the k8s attestor attests it
    selectors = attestor(kubelet, tmp_path, token_file).attest(PID)

    # then it has the pod's and its container's selectors, fetched with the node's token
    assert selectors == parse_selectors(BILLING + CONTAINER)
    assert server.requests[-1] == ("/pods", f"Bearer {TOKEN}")


def test_container_selectors_can_be_turned_off(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)

    found = attestor(kubelet, tmp_path, token_file, disable_container_selectors=True).attest(PID)

    assert found == parse_selectors(BILLING)


def test_a_static_pod_is_found_by_its_mirror_annotation(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    # the cgroup holds the static pod's config hash; the API pod has its own uid
    mirror = billing_pod()
    mirror["metadata"]["uid"] = "7f1e3d5c-9b7a-4e2c-8d6f-0a2c4e6f8b1d"
    mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"] = trees.POD_UID
    server.pods = [mirror]
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)

    found = attestor(kubelet, tmp_path, token_file).attest(PID)

    assert parse_selectors(["k8s:pod-uid:7f1e3d5c-9b7a-4e2c-8d6f-0a2c4e6f8b1d"]) <= found


def test_a_container_not_in_the_status_yet_is_asked_for_again(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    # given a kubelet whose first two answers do not show the new container yet
    server.hide_container_status = 2
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)
    before = len(server.requests)

    # when the process is attested
    found = attestor(kubelet, tmp_path, token_file, max_poll_attempts=5).attest(PID)

    # then the third answer's selectors are given
    assert found == parse_selectors(BILLING + CONTAINER)
    assert len(server.requests) - before == 3


def test_the_retries_are_bounded_and_then_fail_with_a_code(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    server.hide_container_status = 100
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)
    before = len(server.requests)

    with pytest.raises(PluginError) as raised:
        attestor(kubelet, tmp_path, token_file, max_poll_attempts=3).attest(PID)

    assert raised.value.code == "k8s_container_not_found"
    assert len(server.requests) - before == 3


def test_a_process_in_no_pod_gets_no_selectors_and_no_kubelet_call(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    before = len(server.requests)
    for cgroup in (trees.DOCKER_V2_SYSTEMD, trees.HOST_SHELL_V2):
        trees.write_cgroup(tmp_path, PID, cgroup)

        assert attestor(kubelet, tmp_path, token_file).attest(PID) == frozenset()
    assert len(server.requests) == before


def test_a_token_the_kubelet_does_not_accept_fails_with_a_code(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path
) -> None:
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("eyJhbGciOiJSUzI1NiJ9.another-account.sig")

    with pytest.raises(PluginError) as raised:
        attestor(kubelet, tmp_path, wrong).attest(PID)

    assert raised.value.code == "k8s_kubelet_refused"


def test_the_token_is_read_again_for_each_call(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    # projected service-account tokens are rotated by the kubelet in place
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)
    plugin = attestor(kubelet, tmp_path, token_file)
    plugin.attest(PID)
    server.tokens = {"rotated-token"}
    token_file.write_text("rotated-token")

    plugin.attest(PID)

    assert server.requests[-1] == ("/pods", "Bearer rotated-token")


def test_a_kubelet_certificate_from_another_ca_is_refused(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    # given the agent trusts another cluster's CA
    other = make_pki(tmp_path / "other")
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)
    before = len(server.requests)

    # then the kubelet is not trusted, and the token is never sent to it
    with pytest.raises(PluginError) as raised:
        attestor(kubelet, tmp_path, token_file, kubelet_ca_path=str(other.ca_path)).attest(PID)

    assert raised.value.code == "k8s_kubelet_unreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in raised.value.detail
    assert len(server.requests) == before


def test_a_kubelet_answering_for_another_name_is_refused(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    # given no node name: the kubelet is reached at 127.0.0.1 and must hold a certificate
    # for this host's name (as SPIRE), which the stand-in's certificate does not name
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)
    plugin = attestor(kubelet, tmp_path, token_file, node_name="", node_name_env="HM_UNSET_ENV")
    before = len(server.requests)

    with pytest.raises(PluginError, match="CERTIFICATE_VERIFY_FAILED|mismatch"):
        plugin.attest(PID)
    assert len(server.requests) == before


def test_skip_kubelet_verification_trusts_any_kubelet_certificate(
    kubelet: tuple[FakeKubelet, KubeletPki], server: FakeKubelet, tmp_path: Path, token_file: Path
) -> None:
    other = make_pki(tmp_path / "other")
    trees.write_cgroup(tmp_path, PID, trees.K8S_CONTAINERD_V2)

    found = attestor(
        kubelet,
        tmp_path,
        token_file,
        kubelet_ca_path=str(other.ca_path),
        skip_kubelet_verification=True,
    ).attest(PID)

    assert found == parse_selectors(BILLING + CONTAINER)


def test_the_node_name_comes_from_the_environment_variable(tmp_path: Path) -> None:
    plugin = K8sAttestor(
        {"skip_kubelet_verification": True, "node_name_env": "NODE"}, environ={"NODE": "n-7"}
    )

    assert plugin.node_name == "n-7"


@pytest.mark.parametrize(
    ("table", "code"),
    [
        ({"kubelet_read_only_port": 10255}, "unsupported_workload_attestor_setting"),
        ({"skip_kubelet_verification": True, "kubelet_secure_port": 70000}, None),
        ({"skip_kubelet_verification": True, "certificate_path": "/c.pem"}, None),
        ({"kubelet_ca_path": "/nonexistent/ca.crt"}, None),
        ({"skip_kubelet_verification": True, "poll_retry_interval": "soon"}, None),
        ({"skip_kubelet_verification": True, "reload_intervall": "1s"}, None),
    ],
    ids=["read-only-port", "port", "cert-without-key", "missing-ca", "interval", "unknown"],
)
def test_bad_settings_are_refused(table: dict[str, object], code: str | None) -> None:
    with pytest.raises(AttestorConfigError) as raised:
        K8sAttestor(table)

    assert raised.value.code == (code or "invalid_workload_attestor_config")
