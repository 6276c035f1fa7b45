"""From ClusterSPIFFEID resources, Namespaces and Pods to the entries that should exist.

One entry per (ClusterSPIFFEID, pod) pair that matches: the pod is scheduled (it has a node)
and not finished, its namespace matches `namespaceSelector`, its labels `podSelector`. The
entry's parent is the pod's node alias (the registrar's `--parent-id-template`), its
selectors `k8s:pod-uid:<uid>` plus the rendered `workloadSelectorTemplates`. The pod-uid
selector is what makes an entry the registrar's (with a parent under its node-alias prefix):
a pod's identity never outlives the pod, even when another pod reuses its name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from registrar.templates import TemplateError, check, check_selector, render, selector_matches

POD_UID_SELECTOR = "k8s:pod-uid:"
GROUP = "hallmark.dev"
VERSION = "v1alpha1"
PLURAL = "clusterspiffeids"
DURATION = re.compile(r"(\d+)(h|ms|m|s)")
UNITS = {"h": 3600, "m": 60, "s": 1}

# spiffe_id, parent_id, selectors: what makes two entries the same entry (as the server says)
Key = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class DesiredEntry:
    spiffe_id: str
    parent_id: str
    selectors: tuple[str, ...]
    dns_names: tuple[str, ...] = ()
    federates_with: tuple[str, ...] = ()
    hint: str = ""
    x509_svid_ttl: int | None = None
    jwt_svid_ttl: int | None = None
    admin: bool = False
    downstream: bool = False
    source: str = field(default="", compare=False)  # "<ClusterSPIFFEID>/<namespace>/<pod>"

    @property
    def key(self) -> Key:
        return (self.spiffe_id, self.parent_id, self.selectors)

    def body(self) -> dict[str, Any]:
        """The entry as the REST API takes it."""
        body: dict[str, Any] = {
            "spiffe_id": self.spiffe_id,
            "parent_id": self.parent_id,
            "selectors": list(self.selectors),
            "dns_names": list(self.dns_names),
            "federates_with": list(self.federates_with),
            "hint": self.hint,
            "admin": self.admin,
            "downstream": self.downstream,
        }
        if self.x509_svid_ttl is not None:
            body["x509_svid_ttl"] = self.x509_svid_ttl
        if self.jwt_svid_ttl is not None:
            body["jwt_svid_ttl"] = self.jwt_svid_ttl
        return body

    def changes_from(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """The fields to PATCH so `stored` says what this says. A TTL the resource leaves
        unset is the server's default, which the registrar does not know: it is left alone."""
        changes: dict[str, Any] = {}
        if [n.lower() for n in stored.get("dns_names") or []] != [
            n.lower() for n in self.dns_names
        ]:
            changes["dns_names"] = list(self.dns_names)
        if sorted(stored.get("federates_with") or []) != sorted(self.federates_with):
            changes["federates_with"] = list(self.federates_with)
        if (stored.get("hint") or "") != self.hint:
            changes["hint"] = self.hint
        for name in ("admin", "downstream"):
            if bool(stored.get(name)) != getattr(self, name):
                changes[name] = getattr(self, name)
        for name in ("x509_svid_ttl", "jwt_svid_ttl"):
            wanted = getattr(self, name)
            if wanted is not None and stored.get(name) != wanted:
                changes[name] = wanted
        return changes


def duration_seconds(value: Any, *, name: str) -> int | None:
    """`3600`, `"1h"`, `"90m"`, `"1h30m"` → seconds; absent → None."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        parts = DURATION.findall(value)
        if parts and "".join(n + u for n, u in parts) == value:
            millis = sum(int(n) * (UNITS[u] * 1000 if u != "ms" else 1) for n, u in parts)
            return millis // 1000
    raise TemplateError(f'{name}: {value!r} is not a duration (e.g. 3600, "1h", "90m")')


@dataclass(frozen=True)
class ClusterSpiffeId:
    """One ClusterSPIFFEID resource, checked."""

    name: str
    created: str
    spiffe_id_template: str
    pod_selector: Mapping[str, Any] | None
    namespace_selector: Mapping[str, Any] | None
    workload_selector_templates: tuple[str, ...]
    dns_name_templates: tuple[str, ...]
    federates_with: tuple[str, ...]
    hint: str
    x509_svid_ttl: int | None
    jwt_svid_ttl: int | None
    admin: bool
    downstream: bool

    @classmethod
    def parse(cls, resource: Mapping[str, Any]) -> ClusterSpiffeId:
        meta = resource.get("metadata") or {}
        spec = resource.get("spec") or {}
        template = spec.get("spiffeIDTemplate")
        if not isinstance(template, str) or not template:
            raise TemplateError("spec.spiffeIDTemplate is required")
        templates = [template, *(spec.get("workloadSelectorTemplates") or [])]
        templates += list(spec.get("dnsNameTemplates") or [])
        for text in templates:
            if not isinstance(text, str):
                raise TemplateError("templates are strings")
            check(text)
        for text in spec.get("workloadSelectorTemplates") or []:
            if text.count(":") < 2:
                raise TemplateError(f"workloadSelectorTemplates: {text!r} is not type:key:value")
        check_selector(spec.get("podSelector"))
        check_selector(spec.get("namespaceSelector"))
        return cls(
            name=str(meta.get("name", "")),
            created=str(meta.get("creationTimestamp", "")),
            spiffe_id_template=template,
            pod_selector=spec.get("podSelector"),
            namespace_selector=spec.get("namespaceSelector"),
            workload_selector_templates=tuple(spec.get("workloadSelectorTemplates") or ()),
            dns_name_templates=tuple(spec.get("dnsNameTemplates") or ()),
            federates_with=tuple(spec.get("federatesWith") or ()),
            hint=str(spec.get("hint") or ""),
            x509_svid_ttl=duration_seconds(spec.get("ttl"), name="ttl"),
            jwt_svid_ttl=duration_seconds(spec.get("jwtTtl"), name="jwtTtl"),
            admin=bool(spec.get("admin", False)),
            downstream=bool(spec.get("downstream", False)),
        )

    def applies_to(self, pod: Mapping[str, Any], namespace: Mapping[str, Any] | None) -> bool:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        ns_labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
        if namespace is None and self.namespace_selector:
            return False  # the namespace is not known yet: no guess
        return selector_matches(self.namespace_selector, ns_labels) and selector_matches(
            self.pod_selector, labels
        )


@dataclass(frozen=True)
class Cluster:
    """What the registrar renders with: the trust domain, the cluster and the node alias."""

    trust_domain: str
    cluster_name: str
    cluster_domain: str
    parent_id_template: str

    def context(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "TrustDomain": self.trust_domain,
            "ClusterName": self.cluster_name,
            "ClusterDomain": self.cluster_domain,
            "PodMeta": pod.get("metadata") or {},
            "PodSpec": pod.get("spec") or {},
        }

    def parent_prefix(self) -> str:
        """What every parent this registrar renders starts with: its mark of ownership."""
        marker = "\x00"
        sample = render(
            self.parent_id_template,
            {
                "TrustDomain": self.trust_domain,
                "ClusterName": self.cluster_name,
                "ClusterDomain": self.cluster_domain,
                "PodMeta": _Everything(marker),
                "PodSpec": _Everything(marker),
            },
        )
        return sample.split(marker, 1)[0]


class _Everything(dict[str, Any]):
    """A mapping with every key, each holding `marker` (renders a template's fixed prefix)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        return self.marker


def live(pod: Mapping[str, Any]) -> bool:
    """Scheduled on a node and not finished."""
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    return bool(spec.get("nodeName")) and phase not in ("Succeeded", "Failed")


def pod_entry(cluster: Cluster, resource: ClusterSpiffeId, pod: Mapping[str, Any]) -> DesiredEntry:
    """The entry `resource` gives `pod` (TemplateError when a template does not render)."""
    context = cluster.context(pod)
    uid = (pod.get("metadata") or {}).get("uid")
    if not uid:
        raise TemplateError("the pod has no metadata.uid")
    selectors = {POD_UID_SELECTOR + str(uid)}
    selectors.update(render(t, context) for t in resource.workload_selector_templates)
    dns_names = dict.fromkeys(render(t, context) for t in resource.dns_name_templates)
    meta = pod.get("metadata") or {}
    return DesiredEntry(
        spiffe_id=render(resource.spiffe_id_template, context),
        parent_id=render(cluster.parent_id_template, context),
        selectors=tuple(sorted(selectors)),
        dns_names=tuple(dns_names),
        federates_with=resource.federates_with,
        hint=resource.hint,
        x509_svid_ttl=resource.x509_svid_ttl,
        jwt_svid_ttl=resource.jwt_svid_ttl,
        admin=resource.admin,
        downstream=resource.downstream,
        source=f"{resource.name}/{meta.get('namespace')}/{meta.get('name')}",
    )


@dataclass
class Rendering:
    entries: dict[Key, DesiredEntry]
    errors: list[str]


def desired_entries(
    cluster: Cluster,
    resources: Iterable[ClusterSpiffeId],
    pods: Iterable[Mapping[str, Any]],
    namespaces: Mapping[str, Mapping[str, Any]],
) -> Rendering:
    """Every entry that should exist, by key. Two resources giving one pod the same entry
    give one entry: the older resource's fields win (creation time, then name)."""
    ordered = sorted(resources, key=lambda r: (r.created, r.name))
    entries: dict[Key, DesiredEntry] = {}
    errors: list[str] = []
    for pod in pods:
        if not live(pod):
            continue
        namespace = namespaces.get((pod.get("metadata") or {}).get("namespace", ""))
        for resource in ordered:
            if not resource.applies_to(pod, namespace):
                continue
            try:
                entry = pod_entry(cluster, resource, pod)
            except TemplateError as exc:
                meta = pod.get("metadata") or {}
                errors.append(
                    f"ClusterSPIFFEID {resource.name}: pod {meta.get('namespace')}/"
                    f"{meta.get('name')}: {exc}"
                )
                continue
            entries.setdefault(entry.key, entry)
    return Rendering(entries, errors)
