"""The rotation wiring: beat's schedule names the sweep, and a real Celery worker runs it."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest
from django.db.models import F

from config.celery import _gather_beat_schedule, app
from tenants.events import shared_redis
from tests.celeryworker import real_worker
from tests.trustdomains.changes import statuses
from trustdomains.models import JwtAuthority, X509Authority
from trustdomains.tasks import SWEEP_PENDING_KEY, rotate_all, rotation_interval

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
    shared_redis().delete(SWEEP_PENDING_KEY)  # and their sweeps' unfinished batches
    with real_worker(app, shutdown_timeout=30):
        rotate_all.delay()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and statuses(tenant_a) != ["active", "prepared"]:
            time.sleep(0.2)

    # then the fan-out reached A's tenant task, which prepared its successors; B is unchanged
    assert statuses(tenant_a) == ["active", "prepared"]
    assert statuses(tenant_a, JwtAuthority) == ["active", "prepared"]
    assert statuses(tenant_b) == ["active"]


@pytest.fixture
def eager(monkeypatch):
    """Tasks run where they are queued (Celery's eager mode): the fan-out's logic, no worker."""
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    shared_redis().delete(SWEEP_PENDING_KEY)
    yield
    shared_redis().delete(SWEEP_PENDING_KEY)


def test_a_sweep_reaches_every_tenant_in_batches(tenant_a, tenant_b, eager, monkeypatch):
    # given two tenants past half-life and batches of one tenant
    from tests.conftest import make_tenant
    from trustdomains import tasks

    tenant_c = make_tenant("c")
    monkeypatch.setattr(tasks, "ROTATION_BATCH", 1)
    for handle in (tenant_a, tenant_b, tenant_c):
        age_authorities(handle)

    # when the sweep runs
    queued = rotate_all()

    # then every tenant was rotated, and no sweep is left marked as running
    assert queued >= 3
    for handle in (tenant_a, tenant_b, tenant_c):
        assert statuses(handle) == ["active", "prepared"]
    assert shared_redis().get(SWEEP_PENDING_KEY) is None


def test_a_tenant_that_fails_to_rotate_does_not_stop_the_others(tenant_a, tenant_b, eager):
    # given a tenant whose schema is broken, and another past half-life
    from django.db import connection

    from trustdomains.tasks import rotate_trust_domains

    age_authorities(tenant_b)
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA "{tenant_a.tenant.schema_name}" CASCADE')
    shared_redis().set(SWEEP_PENDING_KEY, 1)

    # when both are rotated in one batch, the broken one first
    failed = rotate_trust_domains([str(tenant_a.tenant.id), str(tenant_b.tenant.id)])

    # then the broken one is counted as failed and the other rotated all the same
    assert failed == 1
    assert statuses(tenant_b) == ["active", "prepared"]
    assert shared_redis().get(SWEEP_PENDING_KEY) is None


def test_a_sweep_is_skipped_and_said_while_the_previous_one_runs(tenant_a, eager, caplog):
    # given a previous sweep with batches still queued, and a tenant past half-life
    age_authorities(tenant_a)
    shared_redis().set(SWEEP_PENDING_KEY, 2, ex=60)

    # when the next sweep is due
    with caplog.at_level(logging.WARNING, logger="trustdomains.tasks"):
        queued = rotate_all()

    # then it queues nothing and says why, and the tenant is left for the running sweep
    assert queued == 0
    assert "rotation sweep skipped" in caplog.text and "add Celery workers" in caplog.text
    assert statuses(tenant_a) == ["active"]
