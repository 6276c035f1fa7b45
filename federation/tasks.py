"""Federation refresh: beat sweeps the refresh index for what is due; each refresh is a task."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from tenants.scoping import tenant_for_task, tenant_schema

log = logging.getLogger(__name__)


def sweep_interval() -> float:
    return float(getattr(settings, "FEDERATION_SWEEP_SECONDS", 10))


BEAT_SCHEDULE = {
    "federation-refresh-due": {
        "task": "federation.tasks.refresh_due",
        "schedule": sweep_interval(),
        "options": {"expires": sweep_interval()},
    },
}


@shared_task(name="federation.tasks.refresh_due", ignore_result=True)
def refresh_due() -> int:
    """Queue a refresh for every relationship whose `next_refresh_at` has come.

    The due ones come from the public refresh index (federation.schedule), in batches: a
    sweep with nothing due is one query however many tenants there are, and only the tenants
    with something due are visited, by their refresh tasks.
    """
    import datetime as dt

    from federation.schedule.index import claim_due

    lifetime = sweep_interval() * 6
    queued = 0
    for batch in claim_due(lease=dt.timedelta(seconds=lifetime)):
        for due in batch:
            refresh_relationship.apply_async(
                args=(str(due.tenant_id), due.trust_domain), expires=lifetime
            )
        queued += len(batch)
    return queued


@shared_task(name="federation.tasks.refresh_relationship", ignore_result=True)
def refresh_relationship(tenant_id: str, trust_domain: str) -> str:
    """Refresh one relationship in its tenant's schema; the outcome is stored on the row."""
    from federation.models import FederationRelationship
    from federation.refresh import refresh_relationship as refresh
    from hallmark.errors import HallmarkError

    tenant = tenant_for_task(tenant_id, "refresh_relationship")
    if tenant is None:
        return "gone"
    with tenant_schema(tenant):
        try:
            refresh(trust_domain=trust_domain)
        except FederationRelationship.DoesNotExist:
            return "gone"
        except HallmarkError as exc:
            return exc.code
    return "ok"
