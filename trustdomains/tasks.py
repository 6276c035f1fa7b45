"""Rotation tasks: beat fans `rotate_trust_domain` out to every tenant; each runs in its schema."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.conf import settings

from tenants.scoping import all_tenant_ids, tenant_for_task, tenant_schema
from trustdomains import journal

log = logging.getLogger(__name__)
DEFAULT_ROTATION_INTERVAL_SECONDS = 10.0


def rotation_interval() -> float:
    """Seconds between rotation sweeps (settings.ROTATION_INTERVAL_SECONDS, SPIRE: 10 s)."""
    return float(getattr(settings, "ROTATION_INTERVAL_SECONDS", DEFAULT_ROTATION_INTERVAL_SECONDS))


BEAT_SCHEDULE = {
    "trustdomains-rotate-all": {
        "task": "trustdomains.tasks.rotate_all",
        "schedule": rotation_interval(),
        # A sweep nobody ran before the next one is due is dropped, not queued up.
        "options": {"expires": rotation_interval()},
    },
}


@shared_task(name="trustdomains.tasks.rotate_all", ignore_result=True)
def rotate_all(at: float | None = None) -> int:
    """Queue `rotate_trust_domain` for every tenant; returns how many were queued."""
    tenant_ids = all_tenant_ids()
    for tenant_id in tenant_ids:
        rotate_trust_domain.apply_async(
            args=(str(tenant_id),), kwargs={"at": at}, expires=rotation_interval() * 6
        )
    return len(tenant_ids)


@shared_task(name="trustdomains.tasks.rotate_trust_domain", ignore_result=True)
def rotate_trust_domain(tenant_id: str | None, at: float | None = None) -> list[str]:
    """Rotate one tenant's X.509 and JWT journals inside its schema (idempotent, race-safe).

    `at` (epoch seconds) replaces the clock, for tests and for replaying a missed moment.
    Returns the changes made, as `kind:operation:authority id`.
    """
    tenant = tenant_for_task(tenant_id, "rotate_trust_domain")
    if tenant is None:
        log.info("tenant %s no longer exists; skipping its rotation", tenant_id)
        return []
    now = dt.datetime.fromtimestamp(at, tz=dt.UTC) if at is not None else None
    with tenant_schema(tenant):
        changes = journal.rotate(now=now)
    return [f"{c.kind}:{c.operation}:{c.authority_id}" for c in changes]
