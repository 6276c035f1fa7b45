"""The rotation wiring: beat's schedule names the sweep, and a real Celery worker runs it."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.db.models import F

from config.celery import _gather_beat_schedule, app
from tests.trustdomains.changes import statuses
from trustdomains.models import JwtAuthority, X509Authority
from trustdomains.tasks import rotate_all, rotation_interval

pytestmark = pytest.mark.django_db(transaction=True)
THIRTEEN_HOURS = dt.timedelta(hours=13)


def age_authorities(handle) -> None:
    """Make the tenant's active authorities 13 h old (past half-life, before 5/6)."""
    with handle.schema():
        for model in (X509Authority, JwtAuthority):
            model.objects.filter(status="active").update(
                not_before=F("not_before") - THIRTEEN_HOURS,
                not_after=F("not_after") - THIRTEEN_HOURS,
            )


def test_beat_schedule_runs_the_rotation_sweep_every_ten_seconds_by_default():
    # when the Celery app gathers the apps' beat schedules
    entry = _gather_beat_schedule()["trustdomains-rotate-all"]

    # then the rotation sweep is there, at SPIRE's 10 s
    assert entry["task"] == "trustdomains.tasks.rotate_all"
    assert entry["schedule"] == rotation_interval() == 10.0


def test_a_tenant_deleted_after_the_fan_out_is_skipped():
    # given a queued tenant task whose tenant no longer exists
    from trustdomains.tasks import rotate_trust_domain

    # when it runs, then it does nothing rather than fail
    assert rotate_trust_domain("00000000-0000-4000-8000-000000000000") == []


def test_rotation_interval_is_a_setting(settings):
    settings.ROTATION_INTERVAL_SECONDS = 3
    assert rotation_interval() == 3.0


def test_a_real_worker_runs_the_sweep_and_the_tenant_task(tenant_a, tenant_b):
    # given tenant A's authorities past half-life, tenant B's fresh
    age_authorities(tenant_a)

    # when a real Celery worker (Redis broker) consumes the sweep queued like beat does
    app.control.purge()  # earlier tests' fan-outs for tenants that are gone now
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        rotate_all.delay()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and statuses(tenant_a) != ["active", "prepared"]:
            time.sleep(0.2)

    # then the fan-out reached A's tenant task, which prepared its successors; B is unchanged
    assert statuses(tenant_a) == ["active", "prepared"]
    assert statuses(tenant_a, JwtAuthority) == ["active", "prepared"]
    assert statuses(tenant_b) == ["active"]
