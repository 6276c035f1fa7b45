"""Find a process's container and pod in its cgroup file, as the kernel wrote it.

/proc/<pid>/cgroup is written by the kernel from the process's actual cgroup membership; a
process can only move itself to a cgroup it has write access to, and container runtimes
give containers none outside their own. So the container ID and pod UID read here are the
runtime's, not anything the workload says about itself.

Formats understood (each line `hierarchy-id:controllers:path`; cgroup v1 has one line a
hierarchy, v2 a single `0::` line):
Only where runtimes create cgroups (see locate_in_path for why):
- Docker, cgroupfs driver:   /docker/<64 hex>
- Docker, systemd driver:   /system.slice/docker-<64 hex>.scope
- Kubernetes, cgroupfs:     /kubepods/<qos>/pod<uid>/<64 hex>
- Kubernetes, systemd:      /kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with
                            '_'>.slice/<runtime>-<64 hex>.scope, runtime `docker`,
                            `cri-containerd`, `crio`, `containerd`, `libpod`
CRI-O's monitor (`crio-conmon-<id>.scope`) is not the container and is not taken for it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from attestors.workload.unix import WorkloadAttestationError

MAX_CGROUP_FILE_BYTES = 64 * 1024
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")
_RUNTIME_PREFIXES = ("docker-", "cri-containerd-", "crio-", "containerd-", "libpod-")
_POD_UID = re.compile(
    r"^(?:kubepods(?:-[a-z]+)*-)?pod"
    r"([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
    r"(?:\.slice)?$"
)


class CgroupError(WorkloadAttestationError):
    """The caller's cgroup file could not be read or names more than one container."""

    code = "workload_cgroup_unreadable"


@dataclass(frozen=True)
class CgroupEntry:
    """One line of /proc/<pid>/cgroup."""

    hierarchy: str
    controllers: tuple[str, ...]
    path: str


@dataclass(frozen=True)
class ContainerLocation:
    """Where the cgroup file puts the process: a container, maybe in a pod (both may be None)."""

    container_id: str | None
    pod_uid: str | None


def read_cgroup(pid: int, *, proc_path: str = "/proc") -> list[CgroupEntry]:
    """The lines of `<proc_path>/<pid>/cgroup`; a process that is gone is an error."""
    path = os.path.join(proc_path, str(pid), "cgroup")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CGROUP_FILE_BYTES + 1)
    except (FileNotFoundError, ProcessLookupError):
        raise CgroupError(
            f"workload_cgroup_unreadable: process {pid} exited before its cgroup could be read"
        ) from None
    except OSError as exc:
        raise CgroupError(f"workload_cgroup_unreadable: cannot read {path}: {exc}") from None
    if len(raw) > MAX_CGROUP_FILE_BYTES:
        raise CgroupError(f"workload_cgroup_unreadable: {path} is larger than expected")
    entries: list[CgroupEntry] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        hierarchy, sep1, rest = line.partition(":")
        controllers, sep2, cgroup_path = rest.partition(":")
        if not (sep1 and sep2):
            continue
        entries.append(
            CgroupEntry(hierarchy, tuple(c for c in controllers.split(",") if c), cgroup_path)
        )
    return entries


def _container_id(segment: str) -> str | None:
    name = segment.removesuffix(".scope")
    for prefix in _RUNTIME_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name if _CONTAINER_ID.match(name) else None


def _pod_uid(segment: str) -> str | None:
    match = _POD_UID.match(segment)
    return match.group(1).replace("_", "-") if match else None


def locate_in_path(path: str) -> ContainerLocation:
    """The container ID and pod UID of one cgroup path, only where runtimes put containers.

    Anchored, not searched: a user with a delegated cgroup subtree (systemd's user@.service
    delegates one to every user) may create cgroups with any name below it, such as
    `.../user@1000.service/app.slice/docker-<another container's ID>.scope`, and move its
    own processes there. So the container must be where only root (the runtime, the
    kubelet) can create cgroups: `/docker/<id>`, `/system.slice/docker-<id>.scope`, or the
    cgroup right below a pod's under `/kubepods*`. A path seen through a cgroup namespace
    starts with `..` components; the first component after them is then the child of the
    common ancestor, which for a process outside the runtime's tree is never `kubepods*`,
    `docker` or `system.slice/docker-*`. Cgroups a container created below its own are
    still that container.
    """
    segments = [s for s in path.split("/") if s]
    while segments and segments[0] == "..":
        segments.pop(0)
    if not segments:
        return ContainerLocation(None, None)
    head, rest = segments[0], segments[1:]
    if head.startswith("kubepods"):
        for index, segment in enumerate(segments[:3]):
            if (pod_uid := _pod_uid(segment)) is not None:
                below = segments[index + 1 : index + 2]
                container_id = _container_id(below[0]) if below else None
                return ContainerLocation(container_id, pod_uid)
        return ContainerLocation(None, None)
    if head == "docker" and rest and _CONTAINER_ID.match(rest[0]):
        return ContainerLocation(rest[0], None)
    if head == "system.slice" and rest and rest[0].startswith("docker-"):
        return ContainerLocation(_container_id(rest[0]), None)
    return ContainerLocation(None, None)


def locate(pid: int, *, proc_path: str = "/proc") -> ContainerLocation:
    """Where process `pid` runs; ContainerLocation(None, None) for a process on the host.

    Every hierarchy must agree: two different containers (or pods) in one file would mean
    the process could be taken for either, so that is an error rather than a guess.
    """
    found: set[ContainerLocation] = set()
    for entry in read_cgroup(pid, proc_path=proc_path):
        location = locate_in_path(entry.path)
        if location.container_id is not None or location.pod_uid is not None:
            found.add(location)
    if not found:
        return ContainerLocation(None, None)
    if len(found) > 1:
        raise CgroupError(
            f"workload_cgroup_ambiguous: the cgroups of process {pid} name more than one "
            "container or pod",
            code="workload_cgroup_ambiguous",
        )
    return found.pop()
