"""Workload attestor latency per type, against the Docker Engine API and kubelet stand-ins.

Prints p50/p99 of one `attest(pid)` for: the cgroup file read alone, docker (one container
inspection over the Unix socket), k8s (GET /pods over HTTPS with a bearer token, a PodList
of --pods pods, 110 by default: the kubelet's default maximum a node), systemd (cgroup and
unit-file lookup), and the catalog running docker + k8s + systemd at once for one caller.
The stand-ins are tests/attestors/fake_docker.py and fake_kubelet.py (same wire protocol).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attestors.workload import cgroups, process  # noqa: E402
from attestors.workload.catalog import WorkloadAttestors  # noqa: E402
from attestors.workload.docker import DockerAttestor  # noqa: E402
from attestors.workload.k8s import K8sAttestor  # noqa: E402
from attestors.workload.systemd import SystemdAttestor  # noqa: E402
from tests.attestors import cgroup_trees as trees  # noqa: E402
from tests.attestors.fake_docker import fake_docker  # noqa: E402
from tests.attestors.fake_kubelet import TOKEN, billing_pod, fake_kubelet, other_pod  # noqa: E402


def measure(label: str, call: Callable[[], object], calls: int) -> None:
    call()  # warm up (connections, version negotiation)
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    samples.sort()
    p50 = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99) - 1] * 1e6
    print(f"{label:<44} p50 {p50:9.0f} µs   p99 {p99:9.0f} µs   ({calls} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--pods", type=int, default=110)
    args = parser.parse_args()
    pid = os.getpid()
    with tempfile.TemporaryDirectory(prefix="hm-bench-") as name:
        work = Path(name)
        proc = work / "proc"
        token = work / "token"
        token.write_text(TOKEN)
        with fake_docker(work) as daemon, fake_kubelet(work / "kubelet") as (kubelet, pki):
            filler = other_pod()
            kubelet.pods = [copy.deepcopy(filler) for _ in range(args.pods - 1)] + [
                billing_pod("docker")
            ]
            docker_table = {
                "docker_socket_path": str(daemon.server_address),
                "proc_path": str(proc),
            }
            k8s_table = {
                "kubelet_secure_port": kubelet.port,
                "kubelet_ca_path": str(pki.ca_path),
                "token_path": str(token),
                "node_name": "localhost",
                "proc_path": str(proc),
            }
            systemd_table = {"proc_path": str(proc), "root_path": str(work)}
            trees.write_cgroup(proc, pid, trees.K8S_DOCKER_V2)
            print(f"one caller in a pod's container (cri-dockerd), {args.pods} pods on the node")
            measure(
                "cgroup file read + locate",
                lambda: cgroups.locate(pid, proc_path=str(proc)),
                args.calls,
            )
            docker = DockerAttestor(docker_table)
            measure("docker attest (container inspect)", lambda: docker.attest(pid), args.calls)
            k8s = K8sAttestor(k8s_table)
            measure(
                f"k8s attest (GET /pods, {args.pods} pods)", lambda: k8s.attest(pid), args.calls
            )
            trees.write_cgroup(proc, pid, trees.SYSTEMD_SERVICE_V2)
            systemd = SystemdAttestor(systemd_table)
            measure("systemd attest (cgroup + unit file)", lambda: systemd.attest(pid), args.calls)
            trees.write_cgroup(proc, pid, trees.K8S_DOCKER_V2)
            catalog = WorkloadAttestors(
                {"docker": docker_table, "k8s": k8s_table, "systemd": systemd_table}
            )

            async def unused_unix(caller: process.ConnectedProcess) -> frozenset:  # type: ignore[type-arg]
                return frozenset()

            attest = catalog.bind(unused_unix)
            caller = process.connected_process(pid, os.geteuid(), os.getegid())
            measure(
                "catalog: docker + k8s + systemd together",
                lambda: asyncio.run(attest(caller)),
                args.calls,
            )


if __name__ == "__main__":
    main()
