"""Platform tasks: the worker/beat heartbeat that /healthz reads."""

from __future__ import annotations

from celery import shared_task

from config.health import beat

BEAT_SCHEDULE = {
    "platform-heartbeat": {"task": "tenants.tasks.heartbeat", "schedule": 5.0},
}


@shared_task(name="tenants.tasks.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Proves a worker runs tasks that beat scheduled."""
    beat("worker")
