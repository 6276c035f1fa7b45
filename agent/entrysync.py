"""Incremental, paged sync of the agent's authorised entries (SyncAuthorizedEntries).

agent.proto is the spec: ask with the revision held; each page brings changed entries and the
ids of removed ones, in revision order; `more` asks for the next page from the revision just
answered; `full` means the server no longer knows what changed since that revision, so the
set being received replaces the whole held set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from agent.client import DEFAULT_PAGE_SIZE, SyncPage
from agent.state import Entry

_log = logging.getLogger("hallmark.agent")


class EntrySource(Protocol):
    """What the sync needs of the agent API client."""

    async def sync_authorized_entries(self, since_revision: int, page_size: int) -> SyncPage: ...


@dataclass(frozen=True)
class SyncResult:
    """The entry set after a sync, the revision it is at, and what the sync did."""

    entries: dict[str, Entry]
    revision: int
    pages: int
    full: bool
    changed: int
    removed: int


async def sync_entries(
    source: EntrySource,
    held: Mapping[str, Entry],
    since_revision: int,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> SyncResult:
    """Bring `held` (at `since_revision`) up to the server's latest revision."""
    since = since_revision
    incremental: dict[str, Entry] | None = None
    replacement: dict[str, Entry] | None = None
    pages = changed = removed = 0
    while True:
        page = await source.sync_authorized_entries(since, page_size)
        pages += 1
        if page.full and replacement is None:
            replacement = {}  # start over: whatever came before is superseded
        if replacement is not None:
            target = replacement
        else:
            if incremental is None:
                incremental = dict(held)
            target = incremental
        for entry_id in page.removed_entry_ids:
            if target.pop(entry_id, None) is not None:
                removed += 1
        for entry in page.entries:
            target[entry.id] = entry
        changed += len(page.entries)
        advanced = page.revision > since
        since = page.revision
        if not page.more:
            break
        if not advanced and not page.entries and not page.removed_entry_ids:
            _log.warning("entry sync: the server said `more` without progress; stopping")
            break
    if replacement is not None:
        removed = len(held.keys() - replacement.keys())
        entries = replacement
    else:
        entries = incremental if incremental is not None else dict(held)
    return SyncResult(entries, since, pages, replacement is not None, changed, removed)
