"""The Celery app; each Django app declares its beat entries in its tasks module."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("hallmark")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _gather_beat_schedule() -> dict[str, dict[str, object]]:
    from importlib import import_module

    schedule: dict[str, dict[str, object]] = {}
    for module_name in (
        "tenants.tasks",
        "tenants.audit.tasks",
        "trustdomains.tasks",
        "issuance.tasks",
        "federation.tasks",
        "tenants.metering.tasks",
    ):
        try:
            module = import_module(module_name)
        except ModuleNotFoundError:
            continue
        schedule.update(getattr(module, "BEAT_SCHEDULE", {}))
    return schedule


@app.on_after_finalize.connect
def _install_beat_schedule(sender: Celery, **_: object) -> None:
    sender.conf.beat_schedule = _gather_beat_schedule()


# Task counts, failures and durations, and the worker's and beat's metrics listener.
import config.celerymetrics  # noqa: E402, F401
import config.celerytracing  # noqa: E402, F401 - tasks carry their trace (when tracing is on)
