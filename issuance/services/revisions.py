"""The entry revision counter: handed out under a row lock so revision order is commit order.

A PostgreSQL sequence would hand out numbers in call order, not commit order: a transaction
holding revision 10 may commit after one holding 11, and an agent that synced up to 11 in
between would never see 10. Every entry write therefore locks the single counter row first
and keeps the lock until it commits; the next writer waits, then reads the committed head.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection

from issuance.models import RevisionCounter

COUNTER_ID = 1


class RevisionLock:
    """The locked counter of one write transaction: `next()` numbers each change it makes."""

    def __init__(self, head: int, horizon: int) -> None:
        self.start = head
        self.head = head
        self.horizon = horizon

    def next(self) -> int:
        self.head += 1
        return self.head

    @property
    def used(self) -> bool:
        return self.head != self.start


@dataclass(frozen=True)
class Revisions:
    """The committed head revision and the tombstone horizon, as one snapshot saw them."""

    head: int
    horizon: int


@contextlib.contextmanager
def locked_revisions() -> Iterator[RevisionLock]:
    """Lock the tenant's counter for the rest of the surrounding transaction.

    The new head is written back when the block ends; the row lock is released only when the
    transaction commits or rolls back, so callers run inside `transaction.atomic()`.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("locked_revisions() must run inside transaction.atomic()")
    counter = RevisionCounter.objects.select_for_update().filter(pk=COUNTER_ID).first()
    if counter is None:  # a schema migrated without its row; racing creators both end here
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {RevisionCounter._meta.db_table} (id, head, horizon) "  # noqa: S608
                "VALUES (%s, 0, 0) ON CONFLICT (id) DO NOTHING",
                [COUNTER_ID],
            )
        counter = RevisionCounter.objects.select_for_update().get(pk=COUNTER_ID)
    lock = RevisionLock(counter.head, counter.horizon)
    yield lock
    if lock.used or lock.horizon != counter.horizon:
        RevisionCounter.objects.filter(pk=COUNTER_ID).update(head=lock.head, horizon=lock.horizon)


def current_revisions() -> Revisions:
    """The counter as the current transaction (or statement) sees it; zeros before any write."""
    row = RevisionCounter.objects.filter(pk=COUNTER_ID).values_list("head", "horizon").first()
    return Revisions(*row) if row else Revisions(0, 0)
