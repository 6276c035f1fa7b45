"""An agent's entry set rebuilt only from SyncAuthorizedEntries answers, as agent.proto says."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone

from issuance.models import Agent, Entry

MAX_PARENT_DEPTH = 8


class EntryMirror:
    """Follows the protocol: pages in order, `full` replaces the set, removals then changes."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.entries: dict[str, Any] = {}
        self.revision = 0

    def sync(self, page_size: int = 0) -> list[Any]:
        """Sync to the end (until `more` is false); the set changes only once the last page came."""
        pages: list[Any] = []
        working = dict(self.entries)
        since = self.revision
        while True:
            page = self.client.sync(since, page_size)
            pages.append(page)
            assert not (page.full and len(pages) > 1), "only the first page may say full"
            if page.full:
                working = {}
            for entry_id in page.removed_entry_ids:
                working.pop(entry_id, None)
            for entry in page.entries:
                working[entry.id] = entry
            assert page.full or page.revision >= since, "only a full sync starts lower"
            since = page.revision
            if not page.more:
                break
        self.entries, self.revision = working, since
        return pages

    def revisions(self) -> dict[str, int]:
        return {entry_id: entry.revision for entry_id, entry in self.entries.items()}


def authorised_in_db(handle: Any, agent_spiffe_id: str) -> dict[str, int]:
    """The agent's entries by walking the parent chain (round 1's algorithm, no stored roots)."""
    with handle.schema():
        agent = Agent.objects.get(spiffe_id=agent_spiffe_id)
        live = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        found: dict[str, int] = {}
        parents = {agent.spiffe_id, *agent.node_aliases}
        seen: set[str] = set()
        for _ in range(MAX_PARENT_DEPTH):
            parents -= seen
            if not parents:
                break
            seen |= parents
            level = [
                e
                for e in Entry.objects.filter(live, parent_id__in=parents)
                if str(e.id) not in found
            ]
            found.update((str(e.id), e.revision) for e in level)
            parents = {e.spiffe_id for e in level}
        return found
