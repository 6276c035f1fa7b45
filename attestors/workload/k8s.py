"""The `k8s` workload attestor: the caller's pod and container, as this node's kubelet says.

The pod UID and container ID come from the caller's cgroup file (attestors.workload.cgroups),
which the kernel writes. The kubelet's secure port (10250) then lists the pods it runs
(`GET /pods`, a PodList), authenticated with the node's credentials: a bearer token (the
agent's service-account token, re-read on each call since projected tokens rotate) and/or a
client certificate, over TLS verified against `kubelet_ca_path`. The unauthenticated
read-only port (10255) is not offered: anyone on the network path could answer for it.

A container that was just started may not be in the kubelet's pod status yet, so, as SPIRE,
the attestor asks again up to `max_poll_attempts` times, `poll_retry_interval` apart, and
then fails. A process whose cgroup names no pod is not a Kubernetes workload: no selectors.

Selectors, as SPIRE's k8s plugin: `k8s:ns:`, `k8s:sa:`, `k8s:node-name:`, `k8s:pod-uid:`,
`k8s:pod-name:`, `k8s:pod-label:<key>:<value>`, `k8s:pod-owner:<kind>:<name>`,
`k8s:pod-owner-uid:<kind>:<uid>`, `k8s:pod-image:` (each image and image ID of the pod's
containers), `k8s:pod-image-count:`, `k8s:pod-init-image:`, `k8s:pod-init-image-count:`,
and for the caller's own container `k8s:container-name:` and `k8s:container-image:` (image
and image ID).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from attestors.workload import cgroups
from attestors.workload.plugin import AttestorConfigError, PluginError, Settings, selectors
from hallmark.selectors import Selector

SELECTOR_TYPE = "k8s"
DEFAULT_SECURE_PORT = 10250
DEFAULT_CA_PATH = "/run/secrets/kubernetes.io/serviceaccount/ca.crt"
DEFAULT_TOKEN_PATH = "/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path)
DEFAULT_NODE_NAME_ENV = "MY_NODE_NAME"
DEFAULT_MAX_POLL_ATTEMPTS = 60
DEFAULT_POLL_RETRY_INTERVAL = 0.5
REQUEST_TIMEOUT = 10.0
MAX_POD_LIST_BYTES = 64 * 1024 * 1024
MAX_TOKEN_BYTES = 64 * 1024
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")


def _duration(settings: Settings, key: str, default: float) -> float:
    """Seconds from a number or a Go-style duration string (`500ms`, `1s`), as SPIRE's."""
    raw = settings.raw(key)
    if not isinstance(raw, str):
        return settings.number(key, default, minimum=0.001)
    match = _DURATION.match(raw)
    if match is None:
        raise AttestorConfigError(
            f"[workload_attestor.k8s] {key} {raw!r} is not a duration like '500ms' or '1s'"
        )
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]
    return float(match.group(1)) * scale


class _KubeletConnection(http.client.HTTPSConnection):
    """HTTPS to `address`, verifying the kubelet's certificate for `server_name`."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext):
        super().__init__(address, port, timeout=REQUEST_TIMEOUT, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(raw, server_hostname=self._server_name)
        except OSError:
            raw.close()
            raise


class K8sAttestor:
    """Attests processes in Kubernetes pods through the kubelet's secure port."""

    name: ClassVar[str] = "k8s"

    def __init__(
        self,
        table: Mapping[str, Any],
        *,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        settings = Settings(self.name, table)
        settings.refuse(
            "kubelet_read_only_port",
            "the read-only port is unauthenticated and unencrypted; the agent talks to the "
            "kubelet's secure port only (kubelet_secure_port, default 10250)",
        )
        self.port = int(settings.number("kubelet_secure_port", DEFAULT_SECURE_PORT, minimum=1))
        if self.port > 65535:
            raise AttestorConfigError("[workload_attestor.k8s] kubelet_secure_port is past 65535")
        self.skip_verification = settings.flag("skip_kubelet_verification")
        self.ca_path = settings.text("kubelet_ca_path", DEFAULT_CA_PATH)
        self.certificate_path = settings.text("certificate_path")
        self.private_key_path = settings.text("private_key_path")
        if (self.certificate_path is None) != (self.private_key_path is None):
            raise AttestorConfigError(
                "[workload_attestor.k8s] certificate_path and private_key_path go together"
            )
        token_path = settings.text("token_path")
        # As SPIRE: the service-account token is the default credential unless a client
        # certificate is configured instead.
        if token_path is None and self.certificate_path is None:
            token_path = DEFAULT_TOKEN_PATH
        self.token_path = token_path
        env_name = settings.text("node_name_env", DEFAULT_NODE_NAME_ENV) or DEFAULT_NODE_NAME_ENV
        environment = os.environ if environ is None else environ
        self.node_name = settings.text("node_name") or environment.get(env_name) or None
        self.max_poll_attempts = int(
            settings.number("max_poll_attempts", DEFAULT_MAX_POLL_ATTEMPTS, minimum=1)
        )
        self.poll_retry_interval = _duration(
            settings, "poll_retry_interval", DEFAULT_POLL_RETRY_INTERVAL
        )
        self.disable_container_selectors = settings.flag("disable_container_selectors")
        self.proc_path = settings.text("proc_path", "/proc") or "/proc"
        settings.finish()
        self._sleep = sleep
        self._context = self._tls_context()

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.skip_verification:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context.load_verify_locations(cafile=self.ca_path)
            except (OSError, ssl.SSLError) as exc:
                raise AttestorConfigError(
                    f"[workload_attestor.k8s] cannot load kubelet_ca_path {self.ca_path}: {exc}"
                ) from None
        if self.certificate_path is not None and self.private_key_path is not None:
            try:
                context.load_cert_chain(self.certificate_path, self.private_key_path)
            except (OSError, ssl.SSLError) as exc:
                raise AttestorConfigError(
                    f"[workload_attestor.k8s] cannot load the client certificate: {exc}"
                ) from None
        return context

    def attest(self, pid: int) -> frozenset[Selector]:
        location = cgroups.locate(pid, proc_path=self.proc_path)
        if location.pod_uid is None:
            return frozenset()
        if location.container_id is None:
            raise PluginError(
                f"k8s_container_not_found: process {pid} is in pod {location.pod_uid} but its "
                "cgroup names no container",
                code="k8s_container_not_found",
            )
        for attempt in range(1, self.max_poll_attempts + 1):
            pod_list = self._pod_list()
            found = find_container(pod_list, location.pod_uid, location.container_id)
            if found is not None:
                pod, status = found
                return pod_selectors(pod, None if self.disable_container_selectors else status)
            if attempt < self.max_poll_attempts:
                self._sleep(self.poll_retry_interval)
        raise PluginError(
            f"k8s_container_not_found: the kubelet shows no container {location.container_id[:12]} "
            f"in pod {location.pod_uid} after {self.max_poll_attempts} attempt(s)",
            code="k8s_container_not_found",
        )

    def _token(self) -> str | None:
        if self.token_path is None:
            return None
        try:
            with open(self.token_path, "rb") as handle:
                raw = handle.read(MAX_TOKEN_BYTES + 1)
        except OSError as exc:
            raise PluginError(
                f"k8s_token_unreadable: cannot read token_path {self.token_path}: {exc}",
                code="k8s_token_unreadable",
            ) from None
        token = raw.decode("utf-8", "replace").strip()
        if not token or len(raw) > MAX_TOKEN_BYTES:
            raise PluginError(
                f"k8s_token_unreadable: {self.token_path} holds no token",
                code="k8s_token_unreadable",
            )
        return token

    def _pod_list(self) -> Mapping[str, Any]:
        address = self.node_name or "127.0.0.1"
        server_name = self.node_name or socket.gethostname()
        headers = {"Accept": "application/json"}
        if (token := self._token()) is not None:
            headers["Authorization"] = f"Bearer {token}"
        connection = _KubeletConnection(address, self.port, server_name, self._context)
        try:
            connection.request("GET", "/pods", headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_POD_LIST_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise PluginError(
                f"k8s_kubelet_unreachable: cannot get pods from the kubelet at "
                f"{address}:{self.port}: {exc}",
                code="k8s_kubelet_unreachable",
            ) from None
        finally:
            connection.close()
        if response.status in (401, 403):
            raise PluginError(
                f"k8s_kubelet_refused: the kubelet answered HTTP {response.status} to GET /pods "
                "(the agent's credentials are not accepted, or lack nodes/proxy access)",
                code="k8s_kubelet_refused",
            )
        if response.status != 200 or len(body) > MAX_POD_LIST_BYTES:
            raise PluginError(
                f"k8s_kubelet_error: GET /pods answered HTTP {response.status}",
                code="k8s_kubelet_error",
            )
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("items"), list):
            raise PluginError(
                "k8s_kubelet_error: GET /pods did not answer a PodList", code="k8s_kubelet_error"
            )
        return document


def _container_id_of(status: Mapping[str, Any]) -> str:
    """The bare ID of a container status's `containerID` (`containerd://<id>` and the like)."""
    value = status.get("containerID")
    if not isinstance(value, str):
        return ""
    return value.partition("://")[2] or value


def _pod_uids(pod: Mapping[str, Any]) -> set[str]:
    metadata = pod.get("metadata") or {}
    uids = {metadata.get("uid")}
    # A static pod runs under its config hash, which its mirror pod carries as an annotation.
    uids.add((metadata.get("annotations") or {}).get(MIRROR_ANNOTATION))
    return {u for u in uids if isinstance(u, str) and u}


def find_container(
    pod_list: Mapping[str, Any], pod_uid: str, container_id: str
) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """(pod, container status) of the caller, or None when the kubelet does not show it yet."""
    for pod in pod_list.get("items") or []:
        if not isinstance(pod, Mapping) or pod_uid not in _pod_uids(pod):
            continue
        status = pod.get("status") or {}
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for container in status.get(key) or []:
                if isinstance(container, Mapping) and _container_id_of(container) == container_id:
                    return pod, container
    return None


def _images(statuses: Any) -> list[str]:
    images: set[str] = set()
    for status in statuses or []:
        if isinstance(status, Mapping):
            images.update(
                v for v in (status.get("image"), status.get("imageID")) if isinstance(v, str) and v
            )
    return sorted(images)


def pod_selectors(
    pod: Mapping[str, Any], container: Mapping[str, Any] | None
) -> frozenset[Selector]:
    """The `k8s:` selectors of a pod and (unless None) the caller's container status."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    values: list[str] = []
    for key, value in (
        ("ns", metadata.get("namespace")),
        ("sa", spec.get("serviceAccountName")),
        ("node-name", spec.get("nodeName")),
        ("pod-uid", metadata.get("uid")),
        ("pod-name", metadata.get("name")),
    ):
        if isinstance(value, str) and value:
            values.append(f"{key}:{value}")
    for key, value in (metadata.get("labels") or {}).items():
        values.append(f"pod-label:{key}:{value}")
    for owner in metadata.get("ownerReferences") or []:
        if isinstance(owner, Mapping):
            values.append(f"pod-owner:{owner.get('kind')}:{owner.get('name')}")
            values.append(f"pod-owner-uid:{owner.get('kind')}:{owner.get('uid')}")
    pod_images = _images(status.get("containerStatuses"))
    values.extend(f"pod-image:{image}" for image in pod_images)
    values.append(f"pod-image-count:{len(status.get('containerStatuses') or [])}")
    init_images = _images(status.get("initContainerStatuses"))
    values.extend(f"pod-init-image:{image}" for image in init_images)
    values.append(f"pod-init-image-count:{len(status.get('initContainerStatuses') or [])}")
    if container is not None:
        if isinstance(name := container.get("name"), str) and name:
            values.append(f"container-name:{name}")
        values.extend(f"container-image:{image}" for image in _images([container]))
    return selectors(SELECTOR_TYPE, values)
