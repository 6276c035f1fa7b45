"""One reconcile: the entries that should exist against the registrar's entries that do.

The registrar's entries are those whose parent is under its node-alias prefix and which
carry a `k8s:pod-uid:` selector; every other entry of the tenant is someone else's and is
never read into the plan. Entries are matched by (spiffe_id, parent_id, selectors), as the
server's uniqueness rule: a missing one is created, one no pod needs is deleted, a second
one with the same key is deleted (a duplicate), and one whose other fields differ is updated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registrar.hallmark_api import HallmarkApi
from registrar.identities import POD_UID_SELECTOR, DesiredEntry, Key

log = logging.getLogger("hallmark.registrar")


@dataclass
class Plan:
    create: list[DesiredEntry] = field(default_factory=list)
    update: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failures: list[str] = field(default_factory=list)  # "<action> <target>: <code>: <detail>"

    def summary(self) -> str:
        return (
            f"created={self.created} updated={self.updated} deleted={self.deleted} "
            f"unchanged={self.unchanged} failed={len(self.failures)}"
        )


def owned(entry: Mapping[str, Any], parent_prefix: str) -> bool:
    return str(entry.get("parent_id", "")).startswith(parent_prefix) and any(
        str(s).startswith(POD_UID_SELECTOR) for s in entry.get("selectors") or []
    )


def stored_key(entry: Mapping[str, Any]) -> Key:
    return (
        str(entry["spiffe_id"]),
        str(entry["parent_id"]),
        tuple(sorted(str(s) for s in entry["selectors"])),
    )


def plan(
    desired: Mapping[Key, DesiredEntry], stored: list[dict[str, Any]], parent_prefix: str
) -> tuple[Plan, int]:
    """What to change, and how many of the registrar's entries are already right."""
    result = Plan()
    seen: set[Key] = set()
    unchanged = 0
    for entry in sorted(stored, key=lambda e: str(e.get("created_at", ""))):
        if not owned(entry, parent_prefix):
            continue
        key = stored_key(entry)
        wanted = desired.get(key)
        if wanted is None or key in seen:
            result.delete.append(entry)
            continue
        seen.add(key)
        changes = wanted.changes_from(entry)
        if changes:
            result.update.append((entry, changes))
        else:
            unchanged += 1
    result.create = [entry for key, entry in desired.items() if key not in seen]
    return result, unchanged


def apply(api: HallmarkApi, todo: Plan, outcome: Outcome, known: dict[str, dict[str, Any]]) -> None:
    """Deletes first (a pod's entry gone before its replacement's), then updates, creates.
    `known` (the registrar's view of the stored entries, by id) follows every item stored."""
    if todo.delete:
        results = api.batch("delete", [e["id"] for e in todo.delete])
        for entry, result in zip(todo.delete, results, strict=True):
            if _count(outcome, "deleted", "delete", entry["spiffe_id"], result):
                known.pop(entry["id"], None)
    if todo.update:
        items = [{"id": e["id"], **changes} for e, changes in todo.update]
        results = api.batch("update", items)
        for (entry, _), result in zip(todo.update, results, strict=True):
            if _count(outcome, "updated", "update", entry["spiffe_id"], result):
                known[entry["id"]] = result["entry"]
    if todo.create:
        results = api.batch("create", [e.body() for e in todo.create])
        for wanted, result in zip(todo.create, results, strict=True):
            target = f"{wanted.spiffe_id} ({wanted.source})"
            if _count(outcome, "created", "create", target, result):
                known[result["entry"]["id"]] = result["entry"]


def _count(outcome: Outcome, counter: str, action: str, target: str, result: Any) -> bool:
    status = result.get("status") or {}
    if status.get("code") == "ok":
        setattr(outcome, counter, getattr(outcome, counter) + 1)
        return True
    failure = f"{action} {target}: {status.get('code')}: {status.get('detail')}"
    outcome.failures.append(failure)
    log.warning("refused: %s", failure)
    return False


class EntryView:
    """The plane's entries as the registrar last knew them: listed in full when it starts, on
    every full resync and after any failed call; in between, kept by the batch answers (so a
    burst of pod events costs the changed entries, not a list of the whole tenant)."""

    def __init__(self, api: HallmarkApi) -> None:
        self.api = api
        self.entries: dict[str, dict[str, Any]] | None = None
        self.lists = 0

    def forget(self) -> None:
        self.entries = None

    def current(self) -> dict[str, dict[str, Any]]:
        if self.entries is None:
            self.entries = {str(e["id"]): e for e in self.api.entries()}
            self.lists += 1
        return self.entries


def reconcile(
    api: HallmarkApi,
    desired: Mapping[Key, DesiredEntry],
    parent_prefix: str,
    view: EntryView | None = None,
) -> Outcome:
    view = view or EntryView(api)
    known = view.current()
    todo, unchanged = plan(desired, list(known.values()), parent_prefix)
    outcome = Outcome(unchanged=unchanged)
    try:
        apply(api, todo, outcome, known)
    except Exception:
        view.forget()  # a call failed part-way: what is stored is not known any more
        raise
    if outcome.failures:
        view.forget()
    return outcome
