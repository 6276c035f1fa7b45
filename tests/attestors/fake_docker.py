"""A Docker Engine API stand-in on a Unix socket: HTTP/1.1, the Engine's paths and JSON.

It answers `GET /_ping` (with the `API-Version` header a daemon sends) and
`GET /v<version>/containers/<id>/json` with a container inspection in the Engine's shape
(trimmed of fields nothing reads, keeping the ones the attestor does and their neighbours),
or 404 `{"message": "No such container: <id>"}` as dockerd answers. Requests are recorded.
"""

from __future__ import annotations

import http.server
import json
import re
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.attestors.cgroup_trees import DOCKER_ID, K8S_CONTAINER_ID, POD_UID

_INSPECT = re.compile(r"^/v(\d+\.\d+)/containers/([^/]+)/json$")


def ledger_container() -> dict[str, Any]:
    """`docker run -d --name ledger --label com.acme.app=ledger ... ghcr.io/acme/ledger:2.3.1`."""
    return {
        "Id": DOCKER_ID,
        "Created": "2026-11-29T21:14:08.551972812Z",
        "Path": "/usr/local/bin/ledger",
        "Args": ["serve", "--listen", ":8443"],
        "State": {
            "Status": "running",
            "Running": True,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": 48213,
            "ExitCode": 0,
            "Error": "",
            "StartedAt": "2026-11-29T21:14:09.020613441Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        },
        "Image": "sha256:7e0b1c94a4f3d8c2b6e5a7d9c1f3b5e7a9c2d4f6b8e0a1c3d5f7b9e2a4c6d8f0",
        "ResolvConfPath": f"/var/lib/docker/containers/{DOCKER_ID}/resolv.conf",
        "HostnamePath": f"/var/lib/docker/containers/{DOCKER_ID}/hostname",
        "Name": "/ledger",
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {"NetworkMode": "bridge", "RestartPolicy": {"Name": "unless-stopped"}},
        "Config": {
            "Hostname": DOCKER_ID[:12],
            "User": "10001",
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LEDGER_ENV=prod",
                "SPIFFE_ENDPOINT_SOCKET=unix:///run/spire/sockets/agent.sock",
            ],
            "Cmd": ["serve", "--listen", ":8443"],
            "Image": "ghcr.io/acme/ledger:2.3.1",
            "WorkingDir": "/srv",
            "Entrypoint": ["/usr/local/bin/ledger"],
            "Labels": {
                "com.acme.app": "ledger",
                "com.acme.team": "payments",
                "org.opencontainers.image.version": "2.3.1",
            },
        },
        "NetworkSettings": {"IPAddress": "172.17.0.3", "Gateway": "172.17.0.1"},
    }


def k8s_pod_container() -> dict[str, Any]:
    """The pod's container as Docker shows it on a cri-dockerd node (kubelet's labels)."""
    container = ledger_container()
    container["Id"] = K8S_CONTAINER_ID
    container["Name"] = f"/k8s_billing_billing-7d9f8b6c5-x2x7k_payments_{POD_UID}_0"
    container["Image"] = "sha256:2f4e6d8c0b1a3e5f7d9c1b3a5e7f9d1c3b5a7e9f1d3c5b7a9e1f3d5c7b9a1e3f"
    container["Config"] = {
        **container["Config"],
        "Image": "ghcr.io/acme/billing@sha256:5d7f9b1c3e5a7d9f1b3c5e7a9d1f3b5c7e9a1d3f5b7c9e1a3d5f7b9c1e3a5d7f",
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "BILLING_REGION=eu-west-1"],
        "Labels": {
            "io.kubernetes.container.name": "billing",
            "io.kubernetes.pod.name": "billing-7d9f8b6c5-x2x7k",
            "io.kubernetes.pod.namespace": "payments",
            "io.kubernetes.pod.uid": POD_UID,
        },
    }
    return container


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeDockerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return  # AF_UNIX peers have no address to log

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Api-Version", self.server.api_version)
        self.send_header("Docker-Experimental", "false")
        self.send_header("Ostype", "linux")
        self.send_header("Server", "Docker/27.3.1 (linux)")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path == "/_ping":
            self._send(200, b"OK", "text/plain; charset=utf-8")
            return
        match = _INSPECT.match(self.path)
        if match is None:
            self._send(404, b'{"message":"page not found"}\n')
            return
        version, container_id = match.groups()
        if tuple(int(p) for p in version.split(".")) > tuple(
            int(p) for p in self.server.api_version.split(".")
        ):
            message = (
                f"client version {version} is too new. Maximum supported API version is "
                f"{self.server.api_version}"
            )
            self._send(400, json.dumps({"message": message}).encode() + b"\n")
            return
        container = self.server.containers.get(container_id)
        if container is None:
            body = {"message": f"No such container: {container_id}"}
            self._send(404, json.dumps(body).encode() + b"\n")
            return
        self._send(200, json.dumps(container).encode() + b"\n")


class FakeDockerServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The Engine API on `socket_path`, knowing `containers` (by full ID)."""

    daemon_threads = True

    def __init__(self, socket_path: str, api_version: str = "1.47") -> None:
        self.api_version = api_version
        self.containers: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        super().__init__(socket_path, _Handler)


@contextmanager
def fake_docker(directory: Path, api_version: str = "1.47") -> Iterator[FakeDockerServer]:
    """A running fake daemon at `<directory>/docker.sock` that knows both test containers."""
    server = FakeDockerServer(str(directory / "docker.sock"), api_version)
    for container in (ledger_container(), k8s_pod_container()):
        server.containers[container["Id"]] = container
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
