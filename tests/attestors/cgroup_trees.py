"""Prepared /proc/<pid>/cgroup files, as the kernel writes them on real hosts.

Each constant is a whole cgroup file of one process, copied in shape from hosts running
that runtime (IDs made up). `write_cgroup` puts one under a proc root for a pid.
"""

from __future__ import annotations

from pathlib import Path

DOCKER_ID = "3c5b0f9e7d1a24b6c8e0f2a4b6c8d0e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3"
K8S_CONTAINER_ID = "9f2d4c6b8a0e1f3d5c7b9a1e3f5d7c9b1a3e5f7d9c1b3a5e7f9d1c3b5a7e9f1d"
CRIO_CONTAINER_ID = "4e6a8c0b2d4f6e8a0c2b4d6f8e0a2c4b6d8f0e2a4c6b8d0f2e4a6c8b0d2f4e6a"
POD_UID = "c3a1e5b7-2d4f-4e6a-8b0c-1d3e5f7a9b2c"
UNKNOWN_ID = "0" * 63 + "1"

# Docker, cgroup v1, cgroupfs driver (the default on older hosts).
DOCKER_V1_CGROUPFS = f"""12:pids:/docker/{DOCKER_ID}
11:hugetlb:/docker/{DOCKER_ID}
10:net_cls,net_prio:/docker/{DOCKER_ID}
9:perf_event:/docker/{DOCKER_ID}
8:memory:/docker/{DOCKER_ID}
7:devices:/docker/{DOCKER_ID}
6:cpuset:/docker/{DOCKER_ID}
5:blkio:/docker/{DOCKER_ID}
4:freezer:/docker/{DOCKER_ID}
3:cpu,cpuacct:/docker/{DOCKER_ID}
2:rdma:/
1:name=systemd:/docker/{DOCKER_ID}
0::/system.slice/containerd.service
"""

# Docker, cgroup v1, systemd driver.
DOCKER_V1_SYSTEMD = f"""11:memory:/system.slice/docker-{DOCKER_ID}.scope
10:devices:/system.slice/docker-{DOCKER_ID}.scope
9:cpu,cpuacct:/system.slice/docker-{DOCKER_ID}.scope
8:pids:/system.slice/docker-{DOCKER_ID}.scope
1:name=systemd:/system.slice/docker-{DOCKER_ID}.scope
0::/
"""

# Docker, cgroup v2 (unified), systemd driver: the default on current distributions.
DOCKER_V2_SYSTEMD = f"0::/system.slice/docker-{DOCKER_ID}.scope\n"

# Docker, cgroup v2, cgroupfs driver.
DOCKER_V2_CGROUPFS = f"0::/docker/{DOCKER_ID}\n"

# Kubernetes with containerd, cgroup v2, systemd driver (kubeadm's default).
K8S_CONTAINERD_V2 = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice/"
    f"cri-containerd-{K8S_CONTAINER_ID}.scope\n"
)

# Kubernetes with containerd, cgroup v1, cgroupfs driver.
K8S_CONTAINERD_V1_CGROUPFS = "".join(
    f"{n}:{c}:/kubepods/besteffort/pod{POD_UID}/{K8S_CONTAINER_ID}\n"
    for n, c in ((4, "memory"), (3, "cpu,cpuacct"), (2, "pids"), (1, "name=systemd"))
)

# Kubernetes with cri-dockerd (Docker as the runtime), cgroup v2, systemd driver.
K8S_DOCKER_V2 = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice/"
    f"docker-{K8S_CONTAINER_ID}.scope\n"
)

# Kubernetes with CRI-O, cgroup v2, a guaranteed pod.
K8S_CRIO_V2 = (
    f"0::/kubepods.slice/kubepods-pod{POD_UID.replace('-', '_')}.slice/"
    f"crio-{CRIO_CONTAINER_ID}.scope\n"
)

# CRI-O's container monitor (conmon) next to the container: not the container itself.
K8S_CRIO_CONMON_V2 = (
    f"0::/kubepods.slice/kubepods-pod{POD_UID.replace('-', '_')}.slice/"
    f"crio-conmon-{CRIO_CONTAINER_ID}.scope\n"
)

# systemd units.
SYSTEMD_SERVICE_V2 = "0::/system.slice/nginx.service\n"
SYSTEMD_SERVICE_V1 = """12:pids:/system.slice/postgresql@16-main.service
8:memory:/system.slice/postgresql@16-main.service
1:name=systemd:/system.slice/postgresql@16-main.service
0::/system.slice/postgresql@16-main.service
"""
SYSTEMD_SESSION_V2 = "0::/user.slice/user-1000.slice/session-3.scope\n"
SYSTEMD_USER_SERVICE_V2 = (
    "0::/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service\n"
)

# A host process under no container runtime (an interactive shell).
HOST_SHELL_V2 = SYSTEMD_SESSION_V2
# PID 1's own cgroup inside a container without systemd: no unit.
NO_UNIT_V2 = "0::/\n"

# A cgroup file naming two different containers (no runtime writes this).
AMBIGUOUS_V1 = f"""4:memory:/docker/{DOCKER_ID}
1:name=systemd:/docker/{K8S_CONTAINER_ID}
"""


# A user's own cgroups (systemd delegates user@<uid>.service's subtree to the user), named
# to look like a Docker container and like a pod's container: forgeries, not containers.
FORGED_DOCKER_IN_USER_SUBTREE = (
    f"0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{DOCKER_ID}.scope\n"
)
FORGED_POD_IN_USER_SUBTREE = (
    "0::/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods.slice/"
    f"kubepods-pod{POD_UID.replace('-', '_')}.slice/cri-containerd-{K8S_CONTAINER_ID}.scope\n"
)
FORGED_DOCKER_UNDER_CGROUPFS_USER = f"0::/user.slice/docker/{DOCKER_ID}\n"
# A container that made cgroups of its own below its cgroup (it may, with cgroupns and
# delegation): still that container, whatever the sub-cgroups are called.
K8S_NESTED_IN_CONTAINER = (
    f"0::/kubepods/besteffort/pod{POD_UID}/{K8S_CONTAINER_ID}/docker/{DOCKER_ID}\n"
)
# Seen by an agent in a private cgroup namespace (its own pod's container cgroup as root).
K8S_THROUGH_CGROUPNS = (
    f"0::/../../../kubepods-burstable.slice/kubepods-burstable-pod{POD_UID.replace('-', '_')}"
    f".slice/cri-containerd-{K8S_CONTAINER_ID}.scope\n"
)
FORGED_THROUGH_CGROUPNS = (
    "0::/../../../../user.slice/user-1000.slice/user@1000.service/app.slice/"
    f"docker-{DOCKER_ID}.scope\n"
)


def write_cgroup(proc_root: Path, pid: int, content: str) -> Path:
    """Write `content` as `<proc_root>/<pid>/cgroup`; returns the file."""
    directory = proc_root / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cgroup"
    path.write_text(content, encoding="utf-8")
    return path
