"""The registrar's loop: three informers (list, then watch) and a reconcile on every change.

Each informer keeps a copy of its objects: it lists them, then watches from the list's
resourceVersion (`watch=1&allowWatchBookmarks=true`), applying ADDED/MODIFIED/DELETED and
moving its resourceVersion on BOOKMARKs. A 410 Gone (the version is too old) makes it list
again; a broken connection makes it watch again after a short wait, and list again if that
fails too. Any change wakes the reconciler, which waits `settle` seconds for more changes
(a rollout is a burst of events) and then plans against the plane's entries, as the last
list and the batch answers since left them. A full resync runs every `resync` seconds even
without events: the cluster and the entries are listed again, so an event missed for any
reason (or an entry changed by hand) is corrected within one period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registrar import identities
from registrar.hallmark_api import HallmarkApi, HallmarkError
from registrar.identities import Cluster, ClusterSpiffeId
from registrar.kube import KubeClient, KubeError, WatchExpired
from registrar.reconcile import EntryView, Outcome, reconcile
from registrar.templates import TemplateError

log = logging.getLogger("hallmark.registrar")

PODS = "/api/v1/pods"
NAMESPACES = "/api/v1/namespaces"
CLUSTER_SPIFFE_IDS = f"/apis/{identities.GROUP}/{identities.VERSION}/{identities.PLURAL}"


def _uid(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


def _version(value: Any) -> int:
    """resourceVersions are opaque, but the API server's are etcd revisions (integers); one
    that is not compares as the oldest."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class Informer:
    """One resource's objects, kept current by list + watch."""

    def __init__(
        self,
        kube: KubeClient,
        path: str,
        changed: Callable[[], None],
        stop: threading.Event,
        *,
        watch_timeout: int = 300,
        retry: float = 1.0,
    ) -> None:
        self.kube, self.path, self.changed, self.stop = kube, path, changed, stop
        self.watch_timeout = watch_timeout
        self.retry = retry
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, Any]] = {}
        self.resource_version = ""
        self.deleted: dict[str, int] = {}  # uid → the version the watch saw it deleted at
        self.synced = threading.Event()
        self.lists = 0  # how many full lists (the first, then one per 410 or failure)
        self.thread = threading.Thread(target=self._run, name=f"informer {path}", daemon=True)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.objects.values())

    def relist(self, *, notify: bool = True) -> None:
        """List the whole collection and take it as the truth, but for changes the watch has
        already applied after the list's version (a resync runs while the watch goes on)."""
        items, version = self.kube.list(self.path)
        listed = _version(version)
        with self.lock:
            fresh = {_uid(item): item for item in items}
            for uid, obj in self.objects.items():
                if _version((obj.get("metadata") or {}).get("resourceVersion")) > listed:
                    fresh[uid] = obj  # the watch saw a newer state
            for uid, deleted_at in self.deleted.items():
                if deleted_at > listed:
                    fresh.pop(uid, None)  # the watch saw it go after the list
            self.deleted = {}
            self.objects = fresh
            if not self.resource_version or listed >= _version(self.resource_version):
                self.resource_version = version
        self.lists += 1
        log.info("listed %s: %d objects at resourceVersion %s", self.path, len(items), version)
        self.synced.set()
        if notify:
            self.changed()

    def _watch(self) -> None:
        for event in self.kube.watch(
            self.path, self.resource_version, timeout_seconds=self.watch_timeout
        ):
            if self.stop.is_set():
                return
            kind = event.get("type")
            obj = event.get("object") or {}
            version = (obj.get("metadata") or {}).get("resourceVersion")
            with self.lock:
                if kind in ("ADDED", "MODIFIED"):
                    self.objects[_uid(obj)] = obj
                elif kind == "DELETED":
                    self.objects.pop(_uid(obj), None)
                    self.deleted[_uid(obj)] = _version(version)
                if version:
                    self.resource_version = str(version)
            if kind != "BOOKMARK":
                self.changed()

    def _run(self) -> None:
        need_list = True
        while not self.stop.is_set():
            try:
                if need_list:
                    self.relist()
                    need_list = False
                self._watch()  # ends when the server closes it; then watch again
            except WatchExpired as exc:
                log.info("%s; listing %s again", exc, self.path)
                need_list = True
            except KubeError as exc:
                log.warning("%s; retrying in %.1fs", exc, self.retry)
                need_list = need_list or not self.synced.is_set()
                self.stop.wait(self.retry)
            except Exception:  # a bug must not end the informer silently
                log.exception("informer %s failed; listing again", self.path)
                need_list = True
                self.stop.wait(self.retry)


@dataclass
class Settings:
    cluster_name: str
    cluster_domain: str = "cluster.local"
    parent_id_template: str = (
        "spiffe://{{ .TrustDomain }}/k8s-node/{{ .ClusterName }}/{{ .PodSpec.NodeName }}"
    )
    resync: float = 300.0
    settle: float = 0.2
    watch_timeout: int = 300
    retry: float = 1.0


class Registrar:
    """Informers for Pods, Namespaces and ClusterSPIFFEIDs, and the reconcile loop."""

    def __init__(self, kube: KubeClient, api: HallmarkApi, settings: Settings) -> None:
        self.kube, self.api, self.settings = kube, api, settings
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.informers = {
            name: Informer(
                kube,
                path,
                self.wake.set,
                self.stop_event,
                watch_timeout=settings.watch_timeout,
                retry=settings.retry,
            )
            for name, path in (
                ("pods", PODS),
                ("namespaces", NAMESPACES),
                ("clusterspiffeids", CLUSTER_SPIFFE_IDS),
            )
        }
        self.cluster: Cluster | None = None
        self.view = EntryView(api)
        self.reconciles = 0
        self.totals = {"created": 0, "updated": 0, "deleted": 0}  # since start
        self.last: Outcome | None = None
        self.failures: deque[str] = deque(maxlen=1000)  # refused items, as logged
        self.errors: list[str] = []  # the last reconcile's resources or pods that did not render
        self.idle = threading.Event()  # set when a reconcile ended with nothing pending
        self.thread = threading.Thread(target=self._loop, name="registrar", daemon=True)

    def start(self) -> None:
        trust_domain = self.api.trust_domain()
        self.cluster = Cluster(
            trust_domain=trust_domain,
            cluster_name=self.settings.cluster_name,
            cluster_domain=self.settings.cluster_domain,
            parent_id_template=self.settings.parent_id_template,
        )
        prefix = self.cluster.parent_prefix()
        if not prefix.startswith(f"spiffe://{trust_domain}/") or len(prefix) <= len(
            f"spiffe://{trust_domain}/"
        ):
            raise TemplateError(
                f"--parent-id-template must begin with a fixed path in spiffe://{trust_domain}/"
                f" (its fixed part marks the registrar's entries); got {prefix!r}"
            )
        log.info(
            "registering cluster %s into %s; node aliases %s<node>",
            self.settings.cluster_name,
            trust_domain,
            prefix,
        )
        for informer in self.informers.values():
            informer.thread.start()
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        self.thread.join(timeout=10)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    def resources(self, errors: list[str]) -> list[ClusterSpiffeId]:
        parsed = []
        for resource in self.informers["clusterspiffeids"].snapshot():
            try:
                parsed.append(ClusterSpiffeId.parse(resource))
            except TemplateError as exc:
                name = (resource.get("metadata") or {}).get("name")
                errors.append(f"ClusterSPIFFEID {name}: {exc}")
                log.warning("ClusterSPIFFEID %s ignored: %s", name, exc)
        return parsed

    def reconcile_once(self, *, full: bool = False) -> Outcome:
        """Plan and apply; `full` (the periodic resync) lists the cluster and the plane's
        entries again first instead of trusting the watches and the batch answers."""
        assert self.cluster is not None, "start() first"
        if full:
            for informer in self.informers.values():
                informer.relist(notify=False)  # this reconcile is what they would wake
            self.view.forget()
        namespaces = {
            str((n.get("metadata") or {}).get("name")): n
            for n in self.informers["namespaces"].snapshot()
        }
        errors: list[str] = []
        rendering = identities.desired_entries(
            self.cluster, self.resources(errors), self.informers["pods"].snapshot(), namespaces
        )
        for error in rendering.errors:
            log.warning("not rendered: %s", error)
        self.errors = errors + rendering.errors
        outcome = reconcile(self.api, rendering.entries, self.cluster.parent_prefix(), self.view)
        self.reconciles += 1
        self.last = outcome
        for name in self.totals:
            self.totals[name] += getattr(outcome, name)
        self.failures.extend(outcome.failures)
        log.info("reconciled %d desired entries: %s", len(rendering.entries), outcome.summary())
        return outcome

    def _loop(self) -> None:
        next_resync = 0.0
        while not self.stop_event.is_set():
            timeout = max(0.0, next_resync - time.monotonic())
            woken = self.wake.wait(timeout)
            if self.stop_event.is_set():
                return
            if not self.synced():
                self.wake.clear()
                self.stop_event.wait(0.05)
                self.wake.set()
                continue
            if woken:
                self.stop_event.wait(self.settings.settle)  # let a burst of events land
            self.wake.clear()
            self.idle.clear()
            try:
                self.reconcile_once(full=not woken)  # not woken: the periodic full resync
            except (HallmarkError, KubeError) as exc:
                log.warning("reconcile failed: %s; retrying in %.1fs", exc, self.settings.retry)
                self.stop_event.wait(self.settings.retry)
                self.wake.set()
                continue
            except Exception:
                log.exception("reconcile failed")
                self.stop_event.wait(self.settings.retry)
                self.wake.set()
                continue
            next_resync = time.monotonic() + self.settings.resync
            if not self.wake.is_set():
                self.idle.set()
