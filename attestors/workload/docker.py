"""The `docker` workload attestor: the caller's container, as the Docker Engine describes it.

The container ID comes from the caller's cgroup file (attestors.workload.cgroups), which the
kernel writes; the Docker Engine API on its Unix socket then says what that container is.
Selectors, as SPIRE's docker plugin:
- `docker:label:<key>:<value>` for each container label,
- `docker:image_id:<image>`: the image name the container was created from (Config.Image,
  e.g. `envoyproxy/envoy:v1.31.0`; SPIRE's name for it),
- `docker:image_config_digest:<sha256:...>`: the image's content-addressed ID,
- `docker:env:<NAME=value>` for each environment variable the container was given.
A process outside any container gets none and is not an error. A container Docker does not
know (a containerd or CRI-O container on the same host) is an error: it should be attested
by an attestor that knows its runtime, and `docker` is configured to answer for it.

Settings (`[workload_attestor.docker]`): `docker_socket_path` (default
`unix:///var/run/docker.sock`), `docker_version` (API version; negotiated through
`GET /_ping` when not set), `proc_path` (where the host's /proc is mounted; default `/proc`).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from attestors.workload import cgroups
from attestors.workload.plugin import AttestorConfigError, PluginError, Settings, selectors
from hallmark.selectors import Selector

SELECTOR_TYPE = "docker"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# The newest Engine API this client knows; an older daemon's own version is used instead.
CLIENT_API_VERSION = (1, 47)
REQUEST_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket (the Docker Engine API's transport)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _parse_version(text: str) -> tuple[int, int] | None:
    major, sep, minor = text.strip().partition(".")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return (int(major), int(minor))


class DockerAttestor:
    """Attests processes in Docker containers through the Docker Engine API."""

    name: ClassVar[str] = "docker"

    def __init__(self, table: Mapping[str, Any]) -> None:
        settings = Settings(self.name, table)
        socket_path = settings.text("docker_socket_path", DEFAULT_SOCKET)
        assert socket_path is not None
        if socket_path.startswith("unix://"):
            socket_path = socket_path.removeprefix("unix://")
        elif "://" in socket_path:
            raise AttestorConfigError(
                f"[workload_attestor.docker] docker_socket_path {socket_path!r}: only "
                "unix:// sockets are supported"
            )
        self.socket_path = socket_path
        version = settings.text("docker_version")
        if version is not None and _parse_version(version) is None:
            raise AttestorConfigError(
                f"[workload_attestor.docker] docker_version {version!r} is not like '1.45'"
            )
        self._version = version
        self.proc_path = settings.text("proc_path", "/proc") or "/proc"
        settings.finish()
        self._lock = threading.Lock()

    def attest(self, pid: int) -> frozenset[Selector]:
        container_id = cgroups.locate(pid, proc_path=self.proc_path).container_id
        if container_id is None:
            return frozenset()
        status, body = self._get(f"/v{self._api_version()}/containers/{container_id}/json")
        if status == 404:
            raise PluginError(
                f"docker_container_not_found: Docker knows no container {container_id[:12]} "
                f"(process {pid}'s cgroup names it)",
                code="docker_container_not_found",
            )
        if status != 200:
            raise PluginError(
                f"docker_api_error: inspecting container {container_id[:12]} answered HTTP "
                f"{status}: {body[:200].decode('utf-8', 'replace')}",
                code="docker_api_error",
            )
        return container_selectors(_json(body))

    def _api_version(self) -> str:
        with self._lock:
            if self._version is None:
                self._version = self._negotiate()
            return self._version

    def _negotiate(self) -> str:
        connection = _UnixHTTPConnection(self.socket_path, REQUEST_TIMEOUT)
        try:
            connection.request("GET", "/_ping")
            response = connection.getresponse()
            response.read(1024)
            header = response.getheader("API-Version") or ""
        except OSError as exc:
            raise _unreachable(self.socket_path, exc) from None
        finally:
            connection.close()
        server = _parse_version(header)
        if server is None:
            raise PluginError(
                f"docker_api_error: the daemon at {self.socket_path} sent no API-Version",
                code="docker_api_error",
            )
        major, minor = min(server, CLIENT_API_VERSION)
        return f"{major}.{minor}"

    def _get(self, path: str) -> tuple[int, bytes]:
        connection = _UnixHTTPConnection(self.socket_path, REQUEST_TIMEOUT)
        try:
            connection.request("GET", path, headers={"Accept": "application/json"})
            response = connection.getresponse()
            body = response.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(self.socket_path, exc) from None
        finally:
            connection.close()
        if len(body) > MAX_RESPONSE_BYTES:
            raise PluginError("docker_api_error: answer too large", code="docker_api_error")
        return response.status, body


def _unreachable(socket_path: str, exc: Exception) -> PluginError:
    return PluginError(
        f"docker_unreachable: cannot reach the Docker daemon at {socket_path}: {exc}",
        code="docker_unreachable",
    )


def _json(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise PluginError(
            "docker_api_error: the container inspection is not a JSON object",
            code="docker_api_error",
        )
    return document


def container_selectors(container: Mapping[str, Any]) -> frozenset[Selector]:
    """The `docker:` selectors of a container inspection (GET /containers/{id}/json)."""
    config = container.get("Config") or {}
    if not isinstance(config, Mapping):
        raise PluginError("docker_api_error: Config is not an object", code="docker_api_error")
    values: list[str] = []
    labels = config.get("Labels") or {}
    if isinstance(labels, Mapping):
        values.extend(f"label:{k}:{v}" for k, v in labels.items() if isinstance(v, str))
    if isinstance(image := config.get("Image"), str) and image:
        values.append(f"image_id:{image}")
    if isinstance(digest := container.get("Image"), str) and digest:
        values.append(f"image_config_digest:{digest}")
    env = config.get("Env") or []
    if isinstance(env, list):
        values.extend(f"env:{item}" for item in env if isinstance(item, str) and item)
    return selectors(SELECTOR_TYPE, values)
