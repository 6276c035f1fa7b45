"""Rotation lag and bundle sequence age over all tenants, and the Celery queue depth, as beat
serves them: figures from real rotations and a real broker, no tenant in any label."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from config.beatmetrics import PlatformCollector
from config.celery import app
from tenants.events import shared_redis
from tests.trustdomains.changes import HOUR, start_of
from trustdomains import rotationhealth
from trustdomains.journal import activate_at
from trustdomains.models import JwtAuthority, TrustDomain, X509Authority
from trustdomains.tasks import rotate_trust_domain

MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def no_reports():
    """The suite's Redis holds earlier tests' tenants' reports: start from none."""
    client = shared_redis()
    client.delete(*rotationhealth.report_keys())
    yield client
    client.delete(*rotationhealth.report_keys())


def samples(collector: PlatformCollector) -> tuple[str, dict[tuple[str, tuple], float]]:
    registry = CollectorRegistry()
    registry.register(collector)
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }
    return generate_latest(registry).decode(), found


def test_the_lowest_due_point_and_stalest_bundle_set_the_gauges(no_reports):
    # given two tenants' reports: one overdue by 100 s, one due in 50 s
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    for tenant, due, changed in (("t-late", -100, -300), ("t-fine", 50, -10)):
        rotationhealth.record(
            no_reports,
            tenant,
            activation_points={
                "x509": now + dt.timedelta(seconds=due),
                "jwt": now + dt.timedelta(seconds=due * 2),
            },
            bundle_changed_at=now + dt.timedelta(seconds=changed),
        )

    figures = rotationhealth.figures(no_reports, now)
    assert figures.rotation_lag == {"x509": 100.0, "jwt": 200.0}
    assert figures.bundle_sequence_age == 300.0 and figures.tenants == 2

    # when the overdue tenant is gone (deleted), the sweep forgets it
    assert rotationhealth.keep_only(no_reports, ["t-fine"]) == 3
    figures = rotationhealth.figures(no_reports, now)
    assert figures.rotation_lag == {"x509": 0.0, "jwt": 0.0}
    assert figures.bundle_sequence_age == 10.0 and figures.tenants == 1


def test_no_report_yet_gives_no_figure_rather_than_zero(no_reports):
    figures = rotationhealth.figures(no_reports, dt.datetime.now(tz=dt.UTC))
    assert figures.rotation_lag == {"x509": None, "jwt": None}
    assert figures.bundle_sequence_age is None and figures.tenants == 0


@pytest.mark.django_db
def test_real_rotations_report_the_overdue_tenant_without_naming_it(tenant_a, tenant_b, no_reports):
    # given tenant A rotated 10 minutes past its activation point with no successor ready
    # (this run prepares one; only a later run may activate it), and tenant B rotated twice
    # there, so its successor took over and nothing of B is overdue
    with tenant_a.schema():
        due_a = {
            "x509": activate_at(X509Authority.objects.get(status="active")),
            "jwt": activate_at(JwtAuthority.objects.get(status="active")),
        }
    at = max(due_a.values()) + 10 * MINUTE
    assert at < start_of(tenant_a) + 24 * HOUR  # still within the active CA's life
    assert rotate_trust_domain(str(tenant_a.tenant.id), at=at.timestamp())
    for when in (at, at + MINUTE):
        rotate_trust_domain(str(tenant_b.tenant.id), at=when.timestamp())
    with tenant_b.schema():
        assert X509Authority.objects.get(status="active").created_at > tenant_b.tenant.created_at

    # when beat is scraped at that moment
    text, found = samples(PlatformCollector(app, queues=[], clock=lambda: at))

    # then the lag is A's, per kind, and the bundle age is the stalest bundle's
    for kind in ("x509", "jwt"):
        lag = found[("hallmark_rotation_lag_seconds", (("kind", kind),))]
        assert lag == pytest.approx((at - due_a[kind]).total_seconds(), abs=1e-3)
    changed = []
    for handle in (tenant_a, tenant_b):
        with handle.schema():
            changed.append(TrustDomain.objects.get().bundle_sequence_changed_at)
    assert found[("hallmark_bundle_sequence_age_seconds", ())] == pytest.approx(
        (at - min(changed)).total_seconds(), abs=1e-3
    )
    assert found[("hallmark_rotation_tenants_reported", ())] == 2
    # and no label or value names either tenant
    for handle in (tenant_a, tenant_b):
        for secret in (str(handle.tenant.id), handle.tenant.id.hex, handle.trust_domain):
            assert secret not in text


def test_queue_depth_is_the_number_of_messages_waiting_at_every_priority():
    # given a queue no worker consumes, with four messages pushed, one of them prioritised
    queue = f"ops-depth-{uuid.uuid4().hex[:8]}"
    try:
        for priority in (None, None, None, 9):
            app.send_task("no.such.task", queue=queue, priority=priority)
        app.send_task("no.such.task", queue=f"{queue}-other")

        # when beat is scraped
        _, found = samples(PlatformCollector(app, queues=[queue, f"{queue}-never-used"]))

        # then each queue's depth is what waits in it; a queue never used has none
        assert found[("hallmark_celery_queue_depth", (("queue", queue),))] == 4
        assert found[("hallmark_celery_queue_depth", (("queue", f"{queue}-never-used"),))] == 0
    finally:
        with app.connection_for_write() as connection:
            for name in (queue, f"{queue}-other"):
                connection.default_channel.queue_purge(name)


def test_the_default_queues_are_the_ones_the_workers_consume():
    assert PlatformCollector(app).queue_names() == ["celery"]
