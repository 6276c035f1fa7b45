"""The workload attestor catalog: configured attestors all run, selectors unite, failures fail."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestors.workload import process
from attestors.workload.catalog import WorkloadAttestors
from attestors.workload.plugin import AttestorConfigError, PluginError
from hallmark.selectors import Selector
from tests.attestors import cgroup_trees as trees
from tests.attestors.fake_docker import FakeDockerServer, fake_docker
from tests.attestors.fake_kubelet import TOKEN, FakeKubelet, KubeletPki, fake_kubelet


@pytest.fixture(scope="module")
def daemon() -> Iterator[FakeDockerServer]:
    with tempfile.TemporaryDirectory(prefix="hm-cat-") as name, fake_docker(Path(name)) as server:
        yield server


@pytest.fixture(scope="module")
def kubelet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeKubelet, KubeletPki]]:
    with fake_kubelet(tmp_path_factory.mktemp("kubelet")) as running:
        yield running


@pytest.fixture
def tables(
    tmp_path: Path, daemon: FakeDockerServer, kubelet: tuple[FakeKubelet, KubeletPki]
) -> dict[str, dict[str, object]]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    proc = str(tmp_path / "proc")
    return {
        "unix": {},
        "docker": {"docker_socket_path": str(daemon.server_address), "proc_path": proc},
        "k8s": {
            "kubelet_secure_port": kubelet[0].port,
            "kubelet_ca_path": str(kubelet[1].ca_path),
            "token_path": str(token),
            "node_name": "localhost",
            "proc_path": proc,
        },
    }


async def unix_attestor(caller: process.ConnectedProcess) -> frozenset[Selector]:
    """The agent's unix attestation, as the Workload API server runs it."""
    return await asyncio.to_thread(process.attest_connected, caller)


def this_process() -> process.ConnectedProcess:
    return process.connected_process(os.getpid(), os.geteuid(), os.getegid())


def kinds(selectors: frozenset[Selector]) -> set[str]:
    return {s.type for s in selectors}


def test_every_configured_attestor_runs_and_their_selectors_unite(
    tmp_path: Path, tables: dict[str, dict[str, object]]
) -> None:
    # given this process in a pod's container on a cri-dockerd node (Docker knows it too)
    trees.write_cgroup(tmp_path / "proc", os.getpid(), trees.K8S_DOCKER_V2)
    attest = WorkloadAttestors(tables).bind(unix_attestor)

    # when it is attested through the catalog
    found = asyncio.run(attest(this_process()))

    # then it has unix, docker and k8s selectors together
    assert kinds(found) == {"unix", "docker", "k8s"}
    assert Selector("unix", f"uid:{os.geteuid()}") in found
    assert Selector("k8s", "ns:payments") in found
    assert Selector("docker", "label:io.kubernetes.pod.namespace:payments") in found


def test_a_process_in_no_container_gets_unix_selectors_only(
    tmp_path: Path, tables: dict[str, dict[str, object]]
) -> None:
    trees.write_cgroup(tmp_path / "proc", os.getpid(), trees.HOST_SHELL_V2)

    found = asyncio.run(WorkloadAttestors(tables).bind(unix_attestor)(this_process()))

    assert kinds(found) == {"unix"}


def test_one_failing_attestor_fails_the_call_naming_it(
    tmp_path: Path, tables: dict[str, dict[str, object]]
) -> None:
    # given the Docker daemon cannot be reached, while unix and k8s could answer
    trees.write_cgroup(tmp_path / "proc", os.getpid(), trees.K8S_DOCKER_V2)
    tables["docker"]["docker_socket_path"] = str(tmp_path / "gone.sock")

    # then the call fails with docker's reason instead of going on without docker's selectors
    with pytest.raises(PluginError) as raised:
        asyncio.run(WorkloadAttestors(tables).bind(unix_attestor)(this_process()))

    assert raised.value.code == "docker_unreachable"
    assert raised.value.detail.startswith("docker: docker_unreachable")


def test_a_caller_that_is_no_longer_the_connected_process_is_refused(
    tmp_path: Path, tables: dict[str, dict[str, object]]
) -> None:
    # given the connection was recorded for another process image at this pid
    trees.write_cgroup(tmp_path / "proc", os.getpid(), trees.DOCKER_V2_SYSTEMD)
    caller = dataclasses.replace(this_process(), start_time=1)
    del tables["unix"]  # even with unix off, the process binding is checked

    with pytest.raises(process.CallerChangedError):
        asyncio.run(WorkloadAttestors(tables).bind(unix_attestor)(caller))


def test_without_tables_unix_alone_runs_on_the_servers_own_path() -> None:
    catalog = WorkloadAttestors({})

    assert catalog.names == ["unix"]
    assert catalog.bind(unix_attestor) is unix_attestor


def test_unix_can_be_left_out(tmp_path: Path, tables: dict[str, dict[str, object]]) -> None:
    # given a pod's container and the unix table left out
    trees.write_cgroup(tmp_path / "proc", os.getpid(), trees.K8S_DOCKER_V2)
    del tables["unix"]
    catalog = WorkloadAttestors(tables)

    # then the calls get docker and k8s selectors and no unix ones
    found = asyncio.run(catalog.bind(unix_attestor)(this_process()))

    assert catalog.names == ["docker", "k8s"]
    assert kinds(found) == {"docker", "k8s"}


@pytest.mark.parametrize(
    ("tables", "code"),
    [
        ({"podman": {}}, "unknown_workload_attestor"),
        ({"unix": {"discover_workload_path": True}}, "invalid_workload_attestor_config"),
        ({"docker": "yes"}, "invalid_workload_attestor_config"),
        ({"k8s": {"kubelet_read_only_port": 10255}}, "unsupported_workload_attestor_setting"),
    ],
)
def test_bad_tables_are_refused_with_a_code(tables: dict[str, object], code: str) -> None:
    with pytest.raises(AttestorConfigError) as raised:
        WorkloadAttestors(tables)  # type: ignore[arg-type]

    assert raised.value.code == code
