"""Keep the public refresh index in step with each tenant's relationships, and read it.

Every save and delete of a FederationRelationship, whatever service makes it, writes the
index row in the same transaction (Django's post_save/post_delete run inside it; the tenant
schema's search path ends in `public`). A failure after either write rolls both back, so the
index and the relationship never disagree. The sweep then asks one table what is due.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from federation.models import FederationRelationship
from federation.schedule.models import ScheduledRefresh
from tenants.scoping import current_tenant, public_schema

BATCH = 500


@dataclass(frozen=True)
class Due:
    """A refresh to queue: the relationship's tenant and trust domain."""

    tenant_id: uuid.UUID
    trust_domain: str


def track(relationship: FederationRelationship) -> None:
    """Write the relationship's index row (or remove it when nothing is fetched); call in its
    tenant's schema, in the transaction that saved it. A refresh stored ends any lease."""
    if not relationship.is_fetched:
        forget(relationship.pk)
        return
    ScheduledRefresh.objects.bulk_create(
        [
            ScheduledRefresh(
                relationship_id=relationship.pk,
                tenant_id=current_tenant().pk,
                trust_domain=relationship.trust_domain,
                next_refresh_at=relationship.next_refresh_at,
                queued_until=None,
            )
        ],
        update_conflicts=True,
        unique_fields=["relationship_id"],
        update_fields=["tenant", "trust_domain", "next_refresh_at", "queued_until"],
    )


def forget(relationship_id: Any) -> None:
    ScheduledRefresh.objects.filter(relationship_id=relationship_id).delete()


def _saved(sender: Any, instance: FederationRelationship, raw: bool = False, **_: Any) -> None:
    if not raw:  # fixtures loaded raw are not the platform's writes
        track(instance)


def _deleted(sender: Any, instance: FederationRelationship, **_: Any) -> None:
    forget(instance.pk)


def connect() -> None:
    post_save.connect(_saved, sender=FederationRelationship, dispatch_uid="federation.schedule")
    post_delete.connect(_deleted, sender=FederationRelationship, dispatch_uid="federation.schedule")


_CLAIM = """
UPDATE {table} SET queued_until = %(lease)s
WHERE relationship_id IN (
    SELECT relationship_id FROM {table}
    WHERE (next_refresh_at IS NULL OR next_refresh_at <= %(now)s)
      AND (queued_until IS NULL OR queued_until <= %(now)s)
    ORDER BY next_refresh_at NULLS FIRST
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
RETURNING tenant_id, trust_domain
"""


def claim_due(
    *, lease: dt.timedelta, now: dt.datetime | None = None, batch: int = BATCH
) -> Iterator[list[Due]]:
    """The due refreshes of every tenant, in batches, each leased until `now + lease` so that
    the next sweep does not queue them again while they wait (two sweeps at once share the
    work: rows another holds are skipped). One statement a batch; no tenant schema is read."""
    now = now or timezone.now()
    sql = _CLAIM.format(table=connection.ops.quote_name(ScheduledRefresh._meta.db_table))
    while True:
        with public_schema(), connection.cursor() as cursor:
            cursor.execute(sql, {"lease": now + lease, "now": now, "batch": batch})
            rows = cursor.fetchall()
        if rows:
            yield [Due(tenant_id=tenant_id, trust_domain=td) for tenant_id, td in rows]
        if len(rows) < batch:
            return
