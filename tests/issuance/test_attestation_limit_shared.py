"""The failed-attestation limit is one count for every agent-API process, kept in Redis.

Two real agent API servers (TLS relay + grpc.aio each, with their own in-process counts)
stand for two processes on one port; they share the session's real Redis. With Redis
unreachable, each falls back to its own count (issue 7, finding 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import grpc
import pytest
import redis

from attestors.node import join_token
from issuance.agentapi.limits import SharedFailureCount
from issuance.models import JoinToken
from tenants.models import AuditEvent
from tests.issuance.agentapi_harness import TIMEOUT, AgentApiClient, ServerThread
from tests.issuance.conftest import bundle_pem, create_join_token
from tests.issuance.test_agent_api_edge import attest_raw

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = 4


@contextlib.contextmanager
def servers(count: int) -> Iterator[list[ServerThread]]:
    started: list[ServerThread] = []
    try:
        for _ in range(count):
            server = ServerThread()
            server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            server.stop()


def anonymous_client(server: ServerThread, handle) -> AgentApiClient:  # type: ignore[no-untyped-def]
    return AgentApiClient(
        server.port, server_name=handle.trust_domain, roots_pem=bundle_pem(handle)
    )


def answer(client: AgentApiClient, handle, token: str) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as failure:
        attest_raw(client, handle.trust_domain, join_token.attestation_data(token))
    return failure.value.code(), failure.value.details().split(":")[0]


def flush(server: ServerThread) -> None:
    asyncio.run_coroutine_threadsafe(
        server.server.flush_attestation_failures(everything=True), server.loop
    ).result(timeout=TIMEOUT)


def test_failures_spread_over_two_agent_api_processes_count_against_one_limit(settings, tenant_a):
    # given two agent API processes on one Redis, each far below the limit on its own count
    settings.ATTEST_FAILURE_LIMIT = LIMIT
    with servers(2) as (first, second):
        clients = [anonymous_client(first, tenant_a), anonymous_client(second, tenant_a)]
        valid = create_join_token(tenant_a)
        try:
            # when one source spreads LIMIT bad join tokens over both
            spread = [answer(clients[i % 2], tenant_a, f"bad-{i}") for i in range(LIMIT)]
            # then the next attempt is refused by either process, even with a valid token
            refused = [answer(c, tenant_a, valid["token"]) for c in clients]
        finally:
            for client in clients:
                client.close()
        local_counts = [
            s.server.attestation_failures._sources["127.0.0.1"][1] for s in (first, second)
        ]
        flush(first)
        flush(second)

    assert all(code != grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in spread), spread
    assert refused == [(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")] * 2
    assert max(local_counts) < LIMIT  # neither process could have refused on its own count
    with tenant_a.schema():
        assert JoinToken.objects.get(pk=valid["id"]).used_at is None  # refused before the DB
    # and the audit trail still aggregates per process, source and window: every attempt is
    # there once, as a row of its own or inside a count
    rows = AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action="agent.attest", outcome__in=("failure", "denied")
    )
    assert sum(r.detail.get("count", 1) for r in rows) == LIMIT + 2
    assert len(rows) <= 4  # per process: the first failure, then one aggregate


def test_with_redis_unreachable_each_process_still_limits_on_its_own_count(
    settings, tenant_a, caplog
):
    # given an agent API process whose Redis is down (a real connection refusal)
    settings.ATTEST_FAILURE_LIMIT = LIMIT
    down = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    caplog.set_level(logging.WARNING, logger="issuance.agentapi.limits")
    with servers(1) as (server,):
        failures = server.server.attestation_failures
        failures.shared = SharedFailureCount(lambda: down, window=failures.window)
        client = anonymous_client(server, tenant_a)
        valid = create_join_token(tenant_a)
        try:
            # when one source sends LIMIT bad join tokens, then a valid one
            flood = [answer(client, tenant_a, f"bad-{i}") for i in range(LIMIT)]
            refused = answer(client, tenant_a, valid["token"])
        finally:
            client.close()

    # then attestation still works (the failures are judged, not refused wholesale) and the
    # process's own count refuses the source past the limit; the outage is logged once
    assert all(code == grpc.StatusCode.PERMISSION_DENIED for code, _ in flood), flood
    assert refused == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
    with tenant_a.schema():
        assert JoinToken.objects.get(pk=valid["id"]).used_at is None
    outages = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outages) == 1


def test_the_shared_count_is_kept_per_source_with_the_window_as_its_expiry():
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    shared = SharedFailureCount(lambda: client, window=60)
    assert [shared.add("2001:db8::/64") for _ in range(3)] == [1, 2, 3]
    assert shared.count("2001:db8::/64") == 3 and shared.count("198.51.100.7") == 0
    ttl = client.ttl(SharedFailureCount.KEY.format(source="2001:db8::/64"))
    assert 0 < ttl <= 60
