"""Beat tasks of the audit trail: signed checkpoints, and retention (off by default)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from tenants.audit import checkpoints

BEAT_SCHEDULE = {
    "audit-checkpoint": {
        "task": "tenants.audit.tasks.checkpoint",
        "schedule": float(getattr(settings, "AUDIT_CHECKPOINT_INTERVAL_SECONDS", 300)),
        "options": {"expires": float(getattr(settings, "AUDIT_CHECKPOINT_INTERVAL_SECONDS", 300))},
    },
    "audit-retention": {"task": "tenants.audit.tasks.retention", "schedule": 3600.0},
}


@shared_task(name="tenants.audit.tasks.checkpoint", ignore_result=True)
def checkpoint() -> int:
    """Sign a checkpoint of every chain that grew (idempotent: an unchanged chain gets none)."""
    return checkpoints.write_checkpoints()


@shared_task(name="tenants.audit.tasks.retention", ignore_result=True)
def retention() -> int:
    """Drop checkpointed segments older than HALLMARK_AUDIT_RETENTION_DAYS (0: keep all)."""
    return checkpoints.prune()
