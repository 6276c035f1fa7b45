"""Metering: counted in Redis on the hot path, rolled up exactly once, read per tenant."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from rest_framework.test import APIClient

from tenants import operators
from tenants.metering import counters, gauges, rollup
from tenants.metering.models import DailyUsage, RollupBatch
from tests.conftest import TenantHandle

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> APIClient:
    email = f"op-{uuid.uuid4().hex[:8]}@platform.example"
    operators.create_operator(email=email)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {operators.issue_operator_token(email=email)}")
    return client


def _stored(handle: TenantHandle, metric: str) -> int:
    return sum(
        DailyUsage.objects.filter(tenant=handle.tenant, metric=metric).values_list(
            "value", flat=True
        )
    )


def test_a_roll_up_killed_after_its_claim_loses_nothing(tenant_a: TenantHandle) -> None:
    # given 5 X.509-SVIDs counted, and a roll-up that claimed them and died
    counters.count(tenant_a.tenant.pk, counters.X509_SVIDS, 5)
    claimed = rollup.claim()
    assert claimed is not None
    # and 2 more counted after the claim (they go to a new live hash)
    counters.count(tenant_a.tenant.pk, counters.X509_SVIDS, 2)

    # when the next roll-up runs
    rollup.roll_up()

    # then all 7 are stored, once, and no claimed batch is left
    assert _stored(tenant_a, counters.X509_SVIDS) == 7
    assert counters.claimed_batches() == []


def test_a_roll_up_killed_after_storing_adds_nothing_twice(tenant_a: TenantHandle) -> None:
    # given 4 JWT-SVIDs claimed and stored by a roll-up that died before forgetting the batch
    counters.count(tenant_a.tenant.pk, counters.JWT_SVIDS, 4)
    batch = rollup.claim()
    assert batch is not None and rollup.store(batch) is True

    # when the batch is stored again, and two more roll-ups run
    again = rollup.store(batch)
    rollup.roll_up()
    rollup.roll_up()

    # then the 4 are counted once
    assert again is False
    assert _stored(tenant_a, counters.JWT_SVIDS) == 4
    assert RollupBatch.objects.filter(batch_id=batch).exists()


def test_usage_is_exact_between_roll_ups_and_per_tenant(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    # given A's 3 API calls (rolled up) and 2 more (not yet), and none of B's
    for _ in range(3):
        assert tenant_a.client.get("/api/v1/entries").status_code == 200
    rollup.roll_up()
    for _ in range(2):
        tenant_a.client.get("/api/v1/entries")

    # when each asks for today's usage
    today = counters.today().isoformat()
    mine = tenant_a.client.get(f"/api/v1/usage?from={today}&to={today}")
    theirs = tenant_b.client.get(f"/api/v1/usage?from={today}&to={today}")

    # then A sees its 5 calls and B none of them
    assert mine.status_code == 200, mine.content
    assert mine.json()["totals"]["api_calls"] == 5
    assert mine.json()["days"] == [{"date": today, **mine.json()["totals"]}]
    assert theirs.json()["totals"]["api_calls"] == 0


def test_usage_is_exact_while_roll_ups_are_half_done(tenant_a: TenantHandle) -> None:
    # given 4 X.509-SVIDs in a batch a dead roll-up stored but never forgot, 3 in a batch a
    # dead roll-up only claimed, and 2 still live
    counters.count(tenant_a.tenant.pk, counters.X509_SVIDS, 4)
    stored_batch = rollup.claim()
    assert stored_batch is not None and rollup.store(stored_batch) is True
    counters.count(tenant_a.tenant.pk, counters.X509_SVIDS, 3)
    assert rollup.claim() is not None
    counters.count(tenant_a.tenant.pk, counters.X509_SVIDS, 2)

    # when the tenant reads today's usage before any roll-up finishes them
    today = counters.today().isoformat()
    usage = tenant_a.client.get(f"/api/v1/usage?from={today}&to={today}")

    # then each SVID is counted once: the stored batch from the table, not again from Redis
    assert usage.status_code == 200, usage.content
    assert usage.json()["totals"]["x509_svids_issued"] == 9


def test_usage_answers_the_design_shape_with_gauges(tenant_a: TenantHandle) -> None:
    # given two entries and a gauge sample of this hour
    for path in ("/a", "/b"):
        body = {
            "spiffe_id": f"spiffe://{tenant_a.trust_domain}{path}",
            "parent_id": f"spiffe://{tenant_a.trust_domain}/spire/agent/x",
            "selectors": ["unix:uid:1000"],
        }
        assert tenant_a.client.post("/api/v1/entries", body, format="json").status_code == 201
    gauges.sample(tenant_a.tenant)

    answer = tenant_a.client.get("/api/v1/usage").json()

    assert set(answer) >= {"plan", "quotas", "totals", "days"}
    assert set(answer["totals"]) >= {
        "agents_active",
        "agent_hours",
        "x509_svids_issued",
        "jwt_svids_issued",
        "entries",
        "federation_relationships",
    }
    assert answer["totals"]["entries"] == 2
    assert answer["totals"]["agents_active"] == 0
    assert len(answer["days"]) == 30
    assert answer["quotas"] == {
        "max_agents": None,
        "max_entries": None,
        "max_svids_per_month": None,
    }


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("from=2026-13-01", "invalid_date"),
        ("to=yesterday", "invalid_date"),
        ("from=2026-1-1", "invalid_date"),
        ("from=2026-05-02&to=2026-05-01", "invalid_range"),
        ("from=2020-01-01&to=2026-01-01", "range_too_large"),
    ],
)
def test_bad_usage_queries_are_400_with_a_code(
    tenant_a: TenantHandle, operator: APIClient, query: str, code: str
) -> None:
    for client, path in ((tenant_a.client, "/api/v1/usage"), (operator, "/api/v1/operator/usage")):
        answer = client.get(f"{path}?{query}")
        assert answer.status_code == 400, answer.content
        assert answer.json()["code"] == code


def test_the_operator_sees_every_tenant_usage(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    yesterday = counters.today() - dt.timedelta(days=1)
    counters.count(tenant_a.tenant.pk, counters.X509_SVIDS, 3, day=yesterday)
    counters.count(tenant_b.tenant.pk, counters.JWT_SVIDS, 4, day=yesterday)

    answer = operator.get(f"/api/v1/operator/usage?from={yesterday}&to={yesterday}")

    assert answer.status_code == 200, answer.content
    rows = {row["tenant"]["id"]: row for row in answer.json()["tenants"]}
    assert rows[str(tenant_a.tenant.pk)]["totals"]["x509_svids_issued"] == 3
    assert rows[str(tenant_b.tenant.pk)]["totals"]["jwt_svids_issued"] == 4
    assert rows[str(tenant_a.tenant.pk)]["totals"]["jwt_svids_issued"] == 0


def test_beat_rolls_up_and_samples_and_the_tasks_do_it(tenant_a: TenantHandle) -> None:
    from config.celery import _gather_beat_schedule, app
    from tenants.metering import tasks

    schedule = _gather_beat_schedule()
    assert schedule["metering-roll-up"]["task"] == "tenants.metering.tasks.roll_up"
    assert schedule["metering-sample-gauges"]["task"] == "tenants.metering.tasks.sample_gauges"
    app.loader.import_default_modules()
    assert {"tenants.metering.tasks.roll_up", "tenants.metering.tasks.sample_gauges"} <= set(
        app.tasks
    )

    counters.count(tenant_a.tenant.pk, counters.API_CALLS, 9)
    tasks.roll_up()
    assert tasks.sample_gauges() >= 1
    assert _stored(tenant_a, counters.API_CALLS) == 9
