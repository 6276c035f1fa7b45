"""Which agents each entry is authorised for, kept on the entry (`roots`) as entries change.

SPIRE's rule: an agent is authorised for entries parented by its SPIFFE ID or a node alias,
and, recursively, for entries parented by the SPIFFE ID of an entry it is authorised for.
Walking that graph on every sync costs as much as the tenant has entries; instead each entry
stores its roots (every SPIFFE ID above it, up to MAX_PARENT_DEPTH levels, through live
entries) and an agent's entries are `roots && {its ID, its aliases}`, one indexed query.

Any write that changes the graph (an entry created, deleted, expired, given another parent
or SPIFFE ID) recomputes the roots of the entries below it, under the revision lock. An entry
whose roots change gets a new revision (agents that gained it see it as changed) and, when it
lost roots, a tombstone naming them (agents that lost it see it as removed).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from django.db import connection

from issuance.models import Entry, EntryTombstone
from issuance.services.revisions import RevisionLock

# The walk stops here so that a cycle or a very deep chain cannot run away (as in round 1).
MAX_PARENT_DEPTH = 8
IN_CHUNK = 5000
WRITE_BATCH = 2000


@dataclass(frozen=True)
class GraphRow:
    """The part of an entry the authorisation graph needs."""

    id: uuid.UUID
    parent_id: str
    spiffe_id: str
    roots: tuple[str, ...]


def _chunks(values: Iterable[str], size: int = IN_CHUNK) -> Iterator[list[str]]:
    batch: list[str] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _rows(**lookup: object) -> list[GraphRow]:
    return [
        GraphRow(id=i, parent_id=p, spiffe_id=s, roots=tuple(r))
        for i, p, s, r in Entry.objects.filter(expired=False, **lookup).values_list(
            "id", "parent_id", "spiffe_id", "roots"
        )
    ]


def ancestors(nodes: Iterable[str]) -> dict[str, frozenset[str]]:
    """For each SPIFFE ID: itself and the IDs above it through live entries, up to depth - 1 hops.

    That set is exactly the roots of an entry whose parent_id is the given ID.
    """
    seen = {node: {node} for node in nodes}
    frontier = {node: {node} for node in seen}
    for _ in range(MAX_PARENT_DEPTH - 1):
        wanted = set().union(*frontier.values()) if frontier else set()
        if not wanted:
            break
        parents_of: dict[str, set[str]] = {}
        for chunk in _chunks(wanted):
            for row in _rows(spiffe_id__in=chunk):
                parents_of.setdefault(row.spiffe_id, set()).add(row.parent_id)
        for node, front in frontier.items():
            above = {p for f in front for p in parents_of.get(f, ())} - seen[node]
            seen[node] |= above
            frontier[node] = above
        frontier = {node: front for node, front in frontier.items() if front}
    return {node: frozenset(ids) for node, ids in seen.items()}


def roots_for(parent_id: str) -> list[str]:
    return sorted(ancestors([parent_id])[parent_id])


def descendants(nodes: Iterable[str]) -> list[GraphRow]:
    """Live entries up to MAX_PARENT_DEPTH levels below the given SPIFFE IDs."""
    frontier = set(nodes)
    seen_nodes = set(frontier)
    found: dict[uuid.UUID, GraphRow] = {}
    for _ in range(MAX_PARENT_DEPTH):
        if not frontier:
            break
        level = [
            row
            for chunk in _chunks(frontier)
            for row in _rows(parent_id__in=chunk)
            if row.id not in found
        ]
        for row in level:
            found[row.id] = row
        frontier = {row.spiffe_id for row in level} - seen_nodes
        seen_nodes |= frontier
    return list(found.values())


def refresh_roots(
    lock: RevisionLock,
    *,
    nodes: Iterable[str],
    entry_ids: Sequence[uuid.UUID] = (),
    bumped: frozenset[uuid.UUID] = frozenset(),
    previous_parents: Mapping[uuid.UUID, str] | None = None,
    at: dt.datetime,
) -> int:
    """Recompute the roots of live entries below `nodes` and of `entry_ids`.

    Each entry whose roots changed gets a new revision (unless it is in `bumped`, already
    renumbered by the caller) and, if it lost roots, a tombstone. Returns how many changed.
    """
    rows = {row.id: row for row in descendants(nodes)}
    missing = [i for i in entry_ids if i not in rows]
    if missing:
        rows.update((row.id, row) for row in _rows(id__in=missing))
    ancestry = ancestors({row.parent_id for row in rows.values()})
    previous_parents = previous_parents or {}
    tombstones: list[EntryTombstone] = []
    updates: list[tuple[list[str], int | None, uuid.UUID]] = []
    for row in rows.values():
        new = ancestry[row.parent_id]
        if new == frozenset(row.roots):
            continue
        lost = sorted(set(row.roots) - new)
        if lost:
            tombstones.append(
                EntryTombstone(
                    entry_id=row.id,
                    parent_id=previous_parents.get(row.id, row.parent_id),
                    spiffe_id=row.spiffe_id,
                    roots=lost,
                    revision=lock.next(),
                    at=at,
                )
            )
        updates.append((sorted(new), None if row.id in bumped else lock.next(), row.id))
    EntryTombstone.objects.bulk_create(tombstones, batch_size=WRITE_BATCH)
    if updates:
        with connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {Entry._meta.db_table} SET roots = %s, "  # noqa: S608
                "revision = COALESCE(%s, revision) WHERE id = %s",
                updates,
            )
    return len(updates)
