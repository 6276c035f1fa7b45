"""The container and pod of a process, read from cgroup files in every format runtimes write."""

from __future__ import annotations

from pathlib import Path

import pytest

from attestors.workload import cgroups
from tests.attestors import cgroup_trees as trees

PID = 4242


@pytest.mark.parametrize(
    ("content", "container_id", "pod_uid"),
    [
        (trees.DOCKER_V1_CGROUPFS, trees.DOCKER_ID, None),
        (trees.DOCKER_V1_SYSTEMD, trees.DOCKER_ID, None),
        (trees.DOCKER_V2_SYSTEMD, trees.DOCKER_ID, None),
        (trees.DOCKER_V2_CGROUPFS, trees.DOCKER_ID, None),
        (trees.K8S_CONTAINERD_V2, trees.K8S_CONTAINER_ID, trees.POD_UID),
        (trees.K8S_CONTAINERD_V1_CGROUPFS, trees.K8S_CONTAINER_ID, trees.POD_UID),
        (trees.K8S_DOCKER_V2, trees.K8S_CONTAINER_ID, trees.POD_UID),
        (trees.K8S_CRIO_V2, trees.CRIO_CONTAINER_ID, trees.POD_UID),
        (trees.HOST_SHELL_V2, None, None),
        (trees.SYSTEMD_SERVICE_V1, None, None),
        (trees.NO_UNIT_V2, None, None),
        (trees.K8S_NESTED_IN_CONTAINER, trees.K8S_CONTAINER_ID, trees.POD_UID),
        (trees.K8S_THROUGH_CGROUPNS, trees.K8S_CONTAINER_ID, trees.POD_UID),
    ],
    ids=[
        "docker-v1-cgroupfs",
        "docker-v1-systemd",
        "docker-v2-systemd",
        "docker-v2-cgroupfs",
        "k8s-containerd-v2",
        "k8s-containerd-v1",
        "k8s-cri-dockerd-v2",
        "k8s-crio-v2",
        "host-session",
        "host-service-v1",
        "container-root",
        "k8s-nested-in-container",
        "k8s-through-cgroupns",
    ],
)
def test_the_container_and_pod_come_from_the_cgroup_file(
    tmp_path: Path, content: str, container_id: str | None, pod_uid: str | None
) -> None:
    # given the kernel's cgroup file of a process
    trees.write_cgroup(tmp_path, PID, content)

    # when it is located
    location = cgroups.locate(PID, proc_path=str(tmp_path))

    # then the runtime's container ID and the pod UID (dashed, as the API has it) are found
    assert location == cgroups.ContainerLocation(container_id, pod_uid)


@pytest.mark.parametrize(
    "content",
    [
        trees.FORGED_DOCKER_IN_USER_SUBTREE,
        trees.FORGED_POD_IN_USER_SUBTREE,
        trees.FORGED_DOCKER_UNDER_CGROUPFS_USER,
        trees.FORGED_THROUGH_CGROUPNS,
    ],
    ids=["docker-scope", "pod", "docker-dir", "through-cgroupns"],
)
def test_a_users_own_cgroup_named_like_a_container_is_no_container(
    tmp_path: Path, content: str
) -> None:
    # given a process that a user moved into a cgroup of its delegated subtree, named after
    # another container (the user may name its cgroups anything)
    trees.write_cgroup(tmp_path, PID, content)

    # then it is not taken for that container or pod
    assert cgroups.locate(PID, proc_path=str(tmp_path)) == cgroups.ContainerLocation(None, None)


def test_crio_conmon_is_not_taken_for_the_container(tmp_path: Path) -> None:
    trees.write_cgroup(tmp_path, PID, trees.K8S_CRIO_CONMON_V2)

    location = cgroups.locate(PID, proc_path=str(tmp_path))

    assert location == cgroups.ContainerLocation(None, trees.POD_UID)


def test_a_file_naming_two_containers_is_refused_rather_than_guessed(tmp_path: Path) -> None:
    trees.write_cgroup(tmp_path, PID, trees.AMBIGUOUS_V1)

    with pytest.raises(cgroups.CgroupError) as raised:
        cgroups.locate(PID, proc_path=str(tmp_path))

    assert raised.value.code == "workload_cgroup_ambiguous"


def test_a_process_that_is_gone_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(cgroups.CgroupError, match="exited"):
        cgroups.locate(PID, proc_path=str(tmp_path))


def test_the_real_kernel_file_of_this_process_parses() -> None:
    # the test process's own /proc/self/cgroup, whatever this machine runs
    entries = cgroups.read_cgroup(__import__("os").getpid())

    assert entries and all(e.path.startswith("/") for e in entries)
