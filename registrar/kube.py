"""A small Kubernetes API client: list (with limit/continue) and watch (chunked JSON events).

Credentials come from the pod's service account (KUBERNETES_SERVICE_HOST/PORT, the mounted
token and CA) or from a kubeconfig file (server, certificate-authority, token). A watch that
the server can no longer serve from the given resourceVersion answers 410 Gone (as HTTP or as
an ERROR event); `WatchExpired` tells the informer to list again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    """The Kubernetes API refused a call or could not be reached."""


class WatchExpired(KubeError):
    """410 Gone: the resourceVersion is too old; list again."""


@dataclass(frozen=True)
class KubeConfig:
    server: str
    token: str
    ca_path: str | None  # None: the system's CAs

    @classmethod
    def in_cluster(cls, root: Path = SERVICE_ACCOUNT) -> KubeConfig:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError("not in a cluster: KUBERNETES_SERVICE_HOST is not set")
        if ":" in host:  # IPv6
            host = f"[{host}]"
        return cls(
            server=f"https://{host}:{port}",
            token=(root / "token").read_text().strip(),
            ca_path=str(root / "ca.crt"),
        )

    @classmethod
    def from_kubeconfig(cls, path: str | Path, context: str | None = None) -> KubeConfig:
        """The server, CA and bearer token of `context` (or the current one)."""
        text = Path(path).read_text()
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            try:
                import yaml  # noqa: PLC0415 - optional: a JSON kubeconfig needs no YAML reader
            except ImportError as exc:
                raise KubeError("a YAML kubeconfig needs PyYAML (pip install pyyaml)") from exc
            document = yaml.safe_load(text)

        def named(kind: str, name: str) -> dict[str, Any]:
            for item in document.get(kind) or []:
                if item.get("name") == name:
                    return dict(item[kind[:-1]])
            raise KubeError(f"kubeconfig: no {kind[:-1]} named {name!r}")

        current = named("contexts", context or document.get("current-context", ""))
        cluster = named("clusters", current["cluster"])
        user = named("users", current["user"])
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(user["tokenFile"]).read_text().strip()
        if not token:
            raise KubeError("kubeconfig: the user needs a token (or tokenFile)")
        ca = cluster.get("certificate-authority")
        if ca:
            ca = str((Path(path).parent / ca).resolve())
        return cls(server=str(cluster["server"]).rstrip("/"), token=token, ca_path=ca)


class KubeClient:
    """GET lists and watches of one API server with a bearer token."""

    def __init__(self, config: KubeConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {config.token}"
        self.session.headers["Accept"] = "application/json"
        # Given on every call: a session's `verify` loses to REQUESTS_CA_BUNDLE in requests.
        self.verify: str | bool = config.ca_path or True

    def list(self, path: str, *, limit: int = 500) -> tuple[list[dict[str, Any]], str]:
        """Every item under `path` (page by page) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            params: dict[str, Any] = {"limit": limit}
            if token:
                params["continue"] = token
            answer = self._get(path, params)
            if answer.status_code == 410:  # the continue token expired: start over
                items, token = [], ""
                continue
            body = self._json(answer, path)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> Iterator[dict[str, Any]]:
        """Events `{type, object}` after `resource_version`, BOOKMARKs included, until the
        server ends the watch; raises WatchExpired on 410."""
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
        }
        try:
            answer = self.session.get(
                self.config.server + path,
                params=params,
                stream=True,
                verify=self.verify,
                timeout=(self.timeout, timeout_seconds + 30),
            )
        except requests.RequestException as exc:
            raise KubeError(f"watch {path}: {exc}") from exc
        with answer:
            if answer.status_code == 410:
                raise WatchExpired(f"watch {path}: 410 Gone")
            if answer.status_code != 200:
                raise KubeError(f"watch {path}: HTTP {answer.status_code} {answer.text[:200]}")
            try:
                for line in answer.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            raise WatchExpired(f"watch {path}: {status.get('message', 'Gone')}")
                        raise KubeError(f"watch {path}: {status.get('message', status)}")
                    yield event
            except requests.RequestException as exc:
                raise KubeError(f"watch {path}: {exc}") from exc

    def _get(self, path: str, params: dict[str, Any]) -> requests.Response:
        try:
            return self.session.get(
                self.config.server + path, params=params, verify=self.verify, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise KubeError(f"GET {path}: {exc}") from exc

    @staticmethod
    def _json(answer: requests.Response, path: str) -> dict[str, Any]:
        if answer.status_code != 200:
            raise KubeError(f"GET {path}: HTTP {answer.status_code} {answer.text[:200]}")
        body: dict[str, Any] = answer.json()
        return body
