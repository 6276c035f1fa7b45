"""The systemd workload attestor: the unit from the kernel's cgroup file, the unit file on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from attestors.workload.plugin import AttestorConfigError
from attestors.workload.systemd import SystemdAttestor, unit_of_path
from hallmark.selectors import parse_selectors
from tests.attestors import cgroup_trees as trees

PID = 1618


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host root with Debian's unit files and an override in /etc."""
    root = tmp_path / "root"
    for unit in ("nginx.service", "postgresql@.service", "ssh.service"):
        path = root / "lib/systemd/system" / unit
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[Service]\nExecStart=/usr/sbin/true\n")
    local = root / "etc/systemd/system/nginx.service"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("[Service]\nExecStart=/usr/sbin/nginx -g 'daemon off;'\n")
    return root


def attestor(tmp_path: Path, host: Path) -> SystemdAttestor:
    return SystemdAttestor({"proc_path": str(tmp_path / "proc"), "root_path": str(host)})


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        (
            trees.SYSTEMD_SERVICE_V2,
            ["systemd:id:nginx.service", "systemd:fragment_path:/etc/systemd/system/nginx.service"],
        ),
        (
            trees.SYSTEMD_SERVICE_V1,
            [
                "systemd:id:postgresql@16-main.service",
                "systemd:fragment_path:/lib/systemd/system/postgresql@.service",
            ],
        ),
        (trees.SYSTEMD_SESSION_V2, ["systemd:id:session-3.scope"]),
        (trees.SYSTEMD_USER_SERVICE_V2, ["systemd:id:user@1000.service"]),
        (trees.NO_UNIT_V2, []),
    ],
    ids=["service-v2", "template-instance-v1", "session-scope", "user-manager", "no-unit"],
)
def test_the_unit_and_its_file_become_selectors(
    tmp_path: Path, host: Path, cgroup: str, expected: list[str]
) -> None:
    # given the kernel's cgroup file of a process under systemd
    trees.write_cgroup(tmp_path / "proc", PID, cgroup)

    # when it is attested
    found = attestor(tmp_path, host).attest(PID)

    # then its unit (and the file systemd loads for it, the first on the search path)
    assert found == parse_selectors(expected)


def test_a_docker_scope_is_a_unit_too() -> None:
    assert unit_of_path(f"/system.slice/docker-{trees.DOCKER_ID}.scope") == (
        f"docker-{trees.DOCKER_ID}.scope"
    )


def test_a_cgroup_path_outside_systemds_layout_names_no_unit() -> None:
    assert unit_of_path(f"/docker/{trees.DOCKER_ID}") is None


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(AttestorConfigError, match="unknown setting"):
        SystemdAttestor({"dbus_address": "unix:path=/run/dbus/system_bus_socket"})
