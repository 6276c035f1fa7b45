"""The docker workload attestor against a Docker Engine API stand-in on a Unix socket."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestors.workload.docker import DockerAttestor
from attestors.workload.plugin import AttestorConfigError, PluginError
from hallmark.selectors import parse_selectors
from tests.attestors import cgroup_trees as trees
from tests.attestors.fake_docker import FakeDockerServer, fake_docker

PID = 31337


@pytest.fixture(scope="module")
def short_dir() -> Iterator[Path]:
    # Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="hm-docker-") as name:
        yield Path(name)


@pytest.fixture(scope="module")
def daemon(short_dir: Path) -> Iterator[FakeDockerServer]:
    with fake_docker(short_dir, api_version="1.45") as server:
        yield server


def attestor(daemon: FakeDockerServer, proc: Path, **extra: object) -> DockerAttestor:
    return DockerAttestor(
        {"docker_socket_path": f"unix://{daemon.server_address}", "proc_path": str(proc), **extra}
    )


@pytest.mark.parametrize(
    "cgroup",
    [trees.DOCKER_V1_CGROUPFS, trees.DOCKER_V2_SYSTEMD, trees.DOCKER_V1_SYSTEMD],
    ids=["v1-cgroupfs", "v2-systemd", "v1-systemd"],
)
def test_a_container_gets_its_labels_image_and_env(
    daemon: FakeDockerServer, tmp_path: Path, cgroup: str
) -> None:
    # given a process in the ledger container (its cgroup, as the kernel writes it)
    trees.write_cgroup(tmp_path, PID, cgroup)

    # when the docker attestor attests it
    selectors = attestor(daemon, tmp_path).attest(PID)

    # then the selectors are SPIRE's, from the daemon's inspection of that container
    assert selectors == parse_selectors(
        [
            "docker:label:com.acme.app:ledger",
            "docker:label:com.acme.team:payments",
            "docker:label:org.opencontainers.image.version:2.3.1",
            "docker:image_id:ghcr.io/acme/ledger:2.3.1",
            "docker:image_config_digest:sha256:"
            "7e0b1c94a4f3d8c2b6e5a7d9c1f3b5e7a9c2d4f6b8e0a1c3d5f7b9e2a4c6d8f0",
            "docker:env:PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "docker:env:LEDGER_ENV=prod",
            "docker:env:SPIFFE_ENDPOINT_SOCKET=unix:///run/spire/sockets/agent.sock",
        ]
    )
    assert daemon.requests[-1] == f"/v1.45/containers/{trees.DOCKER_ID}/json"


def test_the_api_version_is_negotiated_down_to_the_daemons(short_dir: Path, tmp_path: Path) -> None:
    trees.write_cgroup(tmp_path, PID, trees.DOCKER_V2_SYSTEMD)
    (short_dir / "old").mkdir(exist_ok=True)
    with fake_docker(short_dir / "old", api_version="1.41") as old:
        attestor(old, tmp_path).attest(PID)

        assert old.requests == ["/_ping", f"/v1.41/containers/{trees.DOCKER_ID}/json"]


def test_a_configured_docker_version_is_used_without_negotiating(
    daemon: FakeDockerServer, tmp_path: Path
) -> None:
    trees.write_cgroup(tmp_path, PID, trees.DOCKER_V2_SYSTEMD)
    before = len(daemon.requests)

    attestor(daemon, tmp_path, docker_version="1.43").attest(PID)

    assert daemon.requests[before:] == [f"/v1.43/containers/{trees.DOCKER_ID}/json"]


@pytest.mark.parametrize(
    "cgroup",
    [trees.HOST_SHELL_V2, trees.FORGED_DOCKER_IN_USER_SUBTREE],
    ids=["host-shell", "user-cgroup-named-like-the-container"],
)
def test_a_process_outside_containers_gets_no_selectors_and_no_daemon_call(
    daemon: FakeDockerServer, tmp_path: Path, cgroup: str
) -> None:
    trees.write_cgroup(tmp_path, PID, cgroup)
    before = len(daemon.requests)

    assert attestor(daemon, tmp_path).attest(PID) == frozenset()
    assert len(daemon.requests) == before


def test_a_container_docker_does_not_know_fails_with_a_code(
    daemon: FakeDockerServer, tmp_path: Path
) -> None:
    # a containerd container (a pod's) that the Docker daemon never ran
    trees.write_cgroup(tmp_path, PID, trees.K8S_CRIO_V2)

    with pytest.raises(PluginError) as raised:
        attestor(daemon, tmp_path).attest(PID)

    assert raised.value.code == "docker_container_not_found"


def test_a_daemon_that_is_down_fails_with_a_code(short_dir: Path, tmp_path: Path) -> None:
    trees.write_cgroup(tmp_path, PID, trees.DOCKER_V2_SYSTEMD)
    down = DockerAttestor(
        {"docker_socket_path": str(short_dir / "absent.sock"), "proc_path": str(tmp_path)}
    )

    with pytest.raises(PluginError) as raised:
        down.attest(PID)

    assert raised.value.code == "docker_unreachable"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"docker_socket_path": "tcp://127.0.0.1:2375"}, "only unix://"),
        ({"docker_version": "latest"}, "is not like"),
        ({"container_id_cgroup_matchers": ["/docker/<id>"]}, "unknown setting"),
        ({"docker_socket_path": 5}, "must be a string"),
    ],
)
def test_bad_settings_are_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(AttestorConfigError, match=message):
        DockerAttestor(table)
