"""Metering beat tasks: roll Redis counters up every minute, sample gauges every 5 minutes."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from tenants.metering import gauges, rollup

BEAT_SCHEDULE = {
    "metering-roll-up": {
        "task": "tenants.metering.tasks.roll_up",
        "schedule": float(getattr(settings, "METERING_ROLLUP_SECONDS", 60)),
    },
    "metering-sample-gauges": {
        "task": "tenants.metering.tasks.sample_gauges",
        "schedule": float(getattr(settings, "METERING_SAMPLE_SECONDS", 300)),
    },
}


@shared_task(name="tenants.metering.tasks.roll_up", ignore_result=True)
def roll_up() -> int:
    """Idempotent: a killed run leaves a claimed batch the next run stores exactly once."""
    return rollup.roll_up()


@shared_task(name="tenants.metering.tasks.sample_gauges", ignore_result=True)
def sample_gauges() -> int:
    return gauges.sample_all()
