"""Metering through a running `hallmark up`: the web counts API calls in Redis, beat and the
worker roll them up into the database, and the usage API answers the exact figure."""

from __future__ import annotations

import time

import pytest
import redis

from tenants.metering import counters

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
CALLS = 7


def _pending_fields(client: redis.Redis, tenant_id: str) -> int:
    keys = [counters.LIVE, *client.scan_iter(match=counters.CLAIMED_PREFIX + "*")]
    return sum(1 for key in keys for _ in client.hscan_iter(key, match=f"{tenant_id}|*"))


def test_the_worker_rolls_api_calls_up_and_usage_is_exact(control_plane) -> None:  # type: ignore[no-untyped-def]
    # given a tenant that makes 7 API calls
    tenant = control_plane.signup("meter")
    tenant_id = tenant["tenant"]["id"]
    for _ in range(CALLS):
        assert control_plane.call(tenant["token"], "GET", "entries").status_code == 200
    plane_redis = redis.Redis.from_url(control_plane.env["HALLMARK_REDIS_URL"])

    # when beat's roll-up has run (nothing of the tenant is left in Redis)
    deadline = time.monotonic() + 60
    while _pending_fields(plane_redis, tenant_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _pending_fields(plane_redis, tenant_id) == 0, "no roll-up ran within 60 s"

    # then the usage API, reading the database, answers exactly the 7 calls
    usage = control_plane.call(tenant["token"], "GET", "usage")
    assert usage.status_code == 200, usage.text
    assert usage.json()["totals"]["api_calls"] == CALLS
