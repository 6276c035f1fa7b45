"""Incremental, paged entry sync for one agent, and the upkeep that keeps it exact.

An answer covers the changes after `since_revision` in revision order: entries the agent is
authorised for whose revision is newer (created, changed, or newly authorised), and ids of
entries it lost (tombstones naming one of its roots, unless it holds them again). Each page
is read in one REPEATABLE READ snapshot, so the head revision and the rows agree; revisions
are handed out in commit order (issuance.services.revisions), so nothing committed at or
below an answered revision can appear later.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from issuance.errors import InvalidEntry
from issuance.models import Agent, Entry, EntryTombstone
from issuance.services.agents import refresh_node_aliases
from issuance.services.entries import expire_entries, principal_ids
from issuance.services.revisions import Revisions, current_revisions, locked_revisions

if TYPE_CHECKING:
    from tenants.models import Tenant

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
# gRPC refuses messages over 4 MiB by default; a page stops short of that whatever the entries.
MAX_PAGE_BYTES = 3 * 1024 * 1024
REMOVED_ID_BYTES = 40
TOMBSTONE_HORIZON = dt.timedelta(hours=24)


@dataclass(frozen=True)
class SyncPage:
    """One page of an agent's sync: see SyncAuthorizedEntriesResponse in agent.proto."""

    entries: list[Entry]
    removed_entry_ids: list[str]
    revision: int
    more: bool
    full: bool


def page_size_of(requested: int) -> int:
    """0 asks for the default; more than the maximum gets the maximum."""
    if requested < 0:
        raise InvalidEntry("page_size must not be negative", code="invalid_page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def needs_full_sync(*, since_revision: int, revisions: Revisions, agent: Agent) -> bool:
    """Whether the agent must replace its whole set rather than apply changes.

    Tombstones at or below `revisions.horizon` were pruned, so an agent behind the horizon
    may have missed removals, unless its set comes from a full sync answered after the
    horizon (a paged full sync continuing below it: the removals it could need are newer).
    """
    if since_revision <= 0 or since_revision > revisions.head:
        return True
    if agent.full_sync_revision <= 0:  # never fully synced as this agent (new, re-attested)
        return True
    return since_revision < revisions.horizon and agent.full_sync_revision < revisions.horizon


@contextlib.contextmanager
def _snapshot() -> Iterator[None]:
    """A read-only REPEATABLE READ transaction: every query of the page sees one snapshot."""
    outer = connection.in_atomic_block
    with transaction.atomic():
        if not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def sync_page(
    *,
    tenant: Tenant,
    agent: Agent,
    since_revision: int,
    page_size: int,
    size_of: Callable[[Entry], int],
) -> SyncPage:
    """The next page of changes for `agent` after `since_revision` (0: everything)."""
    size = page_size_of(page_size)
    expire_entries(tenant=tenant)  # expiry becomes a revision before it is read
    agent = refresh_node_aliases(agent)  # node entries may have changed since it attested
    principals = principal_ids(agent)
    with _snapshot():
        revisions = current_revisions()
        full = needs_full_sync(since_revision=since_revision, revisions=revisions, agent=agent)
        start = 0 if full else since_revision
        entries = list(
            Entry.objects.filter(roots__overlap=principals, revision__gt=start).order_by(
                "revision"
            )[: size + 1]
        )
        tombstones: list[tuple[uuid.UUID, int]] = []
        held: set[uuid.UUID] = set()
        if not full:
            tombstones = list(
                EntryTombstone.objects.filter(roots__overlap=principals, revision__gt=start)
                .order_by("revision")
                .values_list("entry_id", "revision")[: size + 1]
            )
            if tombstones:
                held = set(
                    Entry.objects.filter(
                        id__in={entry_id for entry_id, _ in tombstones},
                        roots__overlap=principals,
                    ).values_list("id", flat=True)
                )
    page = _page(entries, tombstones, held, size=size, size_of=size_of)
    if full and agent.full_sync_revision != revisions.head:
        Agent.objects.filter(pk=agent.pk).update(full_sync_revision=revisions.head)
    return SyncPage(
        entries=page.entries,
        removed_entry_ids=page.removed_entry_ids,
        revision=page.revision if page.more else revisions.head,
        more=page.more,
        full=full,
    )


def _page(
    entries: list[Entry],
    tombstones: list[tuple[uuid.UUID, int]],
    held: set[uuid.UUID],
    *,
    size: int,
    size_of: Callable[[Entry], int],
) -> SyncPage:
    """The first `size` changes in revision order, within the byte budget."""
    items: list[tuple[int, Entry | uuid.UUID]] = [(e.revision, e) for e in entries]
    items += [(revision, entry_id) for entry_id, revision in tombstones]
    items.sort(key=lambda item: item[0])
    taken: list[Entry] = []
    removed: dict[str, None] = {}
    used = count = last = 0
    more = False
    for revision, item in items:
        cost = size_of(item) if isinstance(item, Entry) else REMOVED_ID_BYTES
        if count == size or (count and used + cost > MAX_PAGE_BYTES):
            more = True
            break
        if isinstance(item, Entry):
            taken.append(item)
        elif item not in held:  # an entry it holds again is among the changed ones
            removed[str(item)] = None
        used += cost
        count += 1
        last = revision
    return SyncPage(taken, list(removed), last, more, full=False)


def prune_tombstones(*, older_than: dt.timedelta = TOMBSTONE_HORIZON) -> int:
    """Forget removals older than the horizon; agents behind it get a full sync instead."""
    cutoff = timezone.now() - older_than
    if not EntryTombstone.objects.filter(at__lt=cutoff).exists():
        return 0
    with transaction.atomic(), locked_revisions() as revisions:
        top = EntryTombstone.objects.filter(at__lt=cutoff).aggregate(top=Max("revision"))["top"]
        if top is None:
            return 0
        # Everything up to the newest pruned revision goes, so the horizon is exact.
        deleted, _ = EntryTombstone.objects.filter(revision__lte=top).delete()
        revisions.horizon = max(revisions.horizon, top)
    return int(deleted)
