"""A Kubernetes API server stand-in: list and watch of Pods, Namespaces and ClusterSPIFFEIDs.

It speaks the real protocol over HTTPS with bearer-token auth (401 with a `Status` body for
any other token):
- `GET <collection>?limit=N&continue=T` answers a `<Kind>List` whose `metadata` carries the
  collection's `resourceVersion` and, while more remain, a `continue` token;
- `GET <collection>?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=S`
  answers 200 with a chunked stream of JSON lines `{"type": ADDED|MODIFIED|DELETED|BOOKMARK,
  "object": ...}`, every event after RV, then new ones as they happen, and a BOOKMARK (an
  object with only `metadata.resourceVersion`) when idle; a watch from a version older than
  the last compaction gets one `ERROR` event with a 410 `Status` ("too old resource
  version"), as the API server does, and an expired continue token gets HTTP 410.
resourceVersions are one counter for the whole "etcd", as in the API server. Tests change
the cluster through `add`/`modify`/`delete`; `forget` removes an object without an event (a
watch event the registrar never saw), `compact` forgets the event history, `drop_watches`
closes every open watch (a restarted API server or a broken connection).
"""

from __future__ import annotations

import base64
import bisect
import copy
import http.server
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.attestors.fake_kubelet import KubeletPki, make_pki

TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InJlZ2lzdHJhciJ9.hallmark-registrar.signature"  # noqa: S105
PODS = "/api/v1/pods"
NAMESPACES = "/api/v1/namespaces"
CLUSTER_SPIFFE_IDS = "/apis/hallmark.dev/v1alpha1/clusterspiffeids"
KINDS = {
    PODS: ("v1", "Pod"),
    NAMESPACES: ("v1", "Namespace"),
    CLUSTER_SPIFFE_IDS: ("hallmark.dev/v1alpha1", "ClusterSPIFFEID"),
}
BOOKMARK_EVERY = 0.3


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def pod(
    name: str,
    *,
    namespace: str = "payments",
    service_account: str = "billing",
    node: str = "worker-eu-1",
    labels: dict[str, str] | None = None,
    uid: str | None = None,
    phase: str = "Running",
) -> dict[str, Any]:
    """A ReplicaSet's pod as the API server answers it (trimmed of fields nothing reads)."""
    replica_set = name.rsplit("-", 1)[0]
    return {
        "metadata": {
            "name": name,
            "generateName": replica_set + "-",
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "creationTimestamp": _now(),
            "labels": labels if labels is not None else {"app": service_account},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": replica_set,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, replica_set)),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": service_account,
                    "image": f"ghcr.io/acme/{service_account}:1.4.2",
                    "ports": [{"containerPort": 8443, "protocol": "TCP"}],
                }
            ],
            "restartPolicy": "Always",
            "serviceAccountName": service_account,
            "serviceAccount": service_account,
            "nodeName": node,
            "schedulerName": "default-scheduler",
        },
        "status": {
            "phase": phase,
            "hostIP": "10.0.12.7",
            "podIP": "10.244.3.18",
            "startTime": _now(),
            "qosClass": "Burstable",
        },
    }


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "creationTimestamp": _now(),
            "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def cluster_spiffe_id(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "creationTimestamp": _now(),
        },
        "spec": spec,
    }


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeKubeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return

    def _status(self, code: int, reason: str, message: str) -> None:
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            }
        ).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.server.lock:
            self.server.requests.append((parts.path, query))
        if self.headers.get("Authorization", "") != f"Bearer {self.server.token}":
            self._status(401, "Unauthorized", "Unauthorized")
            return
        if parts.path not in KINDS:
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        if query.get("watch") in ("1", "true"):
            self._watch(parts.path, query)
        else:
            self._list(parts.path, query)

    def _list(self, path: str, query: dict[str, str]) -> None:
        api_version, kind = KINDS[path]
        server = self.server
        with server.lock:
            start, version = 0, server.version
            token = query.get("continue")
            if token:
                start, token_version = (int(x) for x in base64.b64decode(token).split(b":"))
                if token_version <= server.compacted:
                    self._status(410, "Expired", "The provided continue parameter is too old")
                    return
                version = token_version
            objects = sorted(
                server.objects[path].values(),
                key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
            )
            limit = int(query.get("limit") or 0) or len(objects) or 1
            page = [copy.deepcopy(o) for o in objects[start : start + limit]]
        for item in page:  # items of a list carry no kind of their own
            item.pop("kind", None)
            item.pop("apiVersion", None)
        meta: dict[str, Any] = {"resourceVersion": str(version)}
        if start + limit < len(objects):
            meta["continue"] = base64.b64encode(f"{start + limit}:{version}".encode()).decode()
            meta["remainingItemCount"] = len(objects) - start - limit
        body = json.dumps(
            {"kind": kind + "List", "apiVersion": api_version, "metadata": meta, "items": page}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, path: str, query: dict[str, str]) -> None:
        server = self.server
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")  # a watch's connection ends with the watch
        self.end_headers()
        try:
            with server.lock:
                generation = server.watch_generation
                too_old = since < server.compacted
            if too_old:
                self._chunk(
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {since} ({server.compacted})",
                            "reason": "Expired",
                            "code": 410,
                        },
                    }
                )
                return
            last_sent = time.monotonic()
            while time.monotonic() < deadline and not server.closing:
                with server.changed:
                    if server.watch_generation != generation:
                        return  # the watches were dropped
                    history = server.events[path]
                    events = history[bisect.bisect_right(history, since, key=lambda e: e[0]) :]
                    current = server.version  # what a bookmark may claim: nothing newer unsent
                    if not events:
                        server.changed.wait(timeout=0.1)
                for version, kind, obj in events:
                    self._chunk({"type": kind, "object": obj})
                    since = version
                    last_sent = time.monotonic()
                if bookmarks and time.monotonic() - last_sent > BOOKMARK_EVERY:
                    api_version, kind_name = KINDS[path]
                    self._chunk(
                        {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": kind_name,
                                "apiVersion": api_version,
                                "metadata": {"resourceVersion": str(current)},
                            },
                        }
                    )
                    with server.lock:
                        server.bookmarks += 1
                    since = max(since, current)
                    last_sent = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return
        finally:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (OSError, ValueError):
                pass
            self.close_connection = True


class FakeKubeApi(http.server.ThreadingHTTPServer):
    """The API server on 127.0.0.1 (an ephemeral port), with one resourceVersion counter."""

    daemon_threads = True

    def __init__(self, pki: KubeletPki) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_path, pki.key_path)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.pki = pki
        self.token = TOKEN
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[str, dict[str, dict[str, Any]]] = {path: {} for path in KINDS}
        # per collection, in resourceVersion order: (version, type, object)
        self.events: dict[str, list[tuple[int, str, dict[str, Any]]]] = {p: [] for p in KINDS}
        self.version = 1000
        self.compacted = 0
        self.watch_generation = 0
        self.bookmarks = 0
        self.closing = False
        self.requests: list[tuple[str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def _emit(self, path: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            self.version += 1
            obj = copy.deepcopy(obj)
            api_version, kind_name = KINDS[path]
            obj["apiVersion"], obj["kind"] = api_version, kind_name
            obj["metadata"]["resourceVersion"] = str(self.version)
            if kind == "DELETED":
                self.objects[path].pop(obj["metadata"]["uid"], None)
            else:
                self.objects[path][obj["metadata"]["uid"]] = obj
            self.events[path].append((self.version, kind, copy.deepcopy(obj)))
            self.changed.notify_all()
            return obj

    def add(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._emit(path, "ADDED", obj)

    def modify(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._emit(path, "MODIFIED", obj)

    def delete(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._emit(path, "DELETED", self.objects[path][obj["metadata"]["uid"]])

    def get(self, path: str, uid: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[path][uid])

    def forget(self, path: str, obj: dict[str, Any]) -> None:
        """Remove an object with no watch event: only a list (a resync) can see it is gone."""
        with self.lock:
            self.version += 1
            self.objects[path].pop(obj["metadata"]["uid"], None)

    def plant(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Add an object with no watch event (its event lost to a compaction)."""
        with self.lock:
            self.version += 1
            obj = copy.deepcopy(obj)
            api_version, kind_name = KINDS[path]
            obj["apiVersion"], obj["kind"] = api_version, kind_name
            obj["metadata"]["resourceVersion"] = str(self.version)
            self.objects[path][obj["metadata"]["uid"]] = obj
            return obj

    def compact(self) -> None:
        """Forget the history: every resourceVersion up to now is "too old"."""
        with self.changed:
            self.compacted = self.version
            for events in self.events.values():
                events.clear()

    def drop_watches(self) -> None:
        with self.changed:
            self.watch_generation += 1
            self.changed.notify_all()

    def watches_from(self, path: str) -> list[str]:
        with self.lock:
            return [
                q.get("resourceVersion", "")
                for p, q in self.requests
                if p == path and q.get("watch") in ("1", "true")
            ]

    def kubeconfig(self, directory: Path) -> Path:
        """A kubeconfig (JSON, which is YAML too) naming this server, its CA and the token."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [
                        {
                            "name": "fake",
                            "cluster": {
                                "server": self.url,
                                "certificate-authority": str(self.pki.ca_path),
                            },
                        }
                    ],
                    "users": [{"name": "registrar", "user": {"token": self.token}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "registrar"}}
                    ],
                }
            )
        )
        return path


@contextmanager
def fake_kube_api(directory: Path) -> Iterator[FakeKubeApi]:
    server = FakeKubeApi(make_pki(directory))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.closing = True
        server.drop_watches()
        server.shutdown()
        server.server_close()
        thread.join()
