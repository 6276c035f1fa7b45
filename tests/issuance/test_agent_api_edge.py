"""The agent API's public edge under abuse: SNI floods, broken tenants, attestation floods.

Real agent API (TLS relay + grpc.aio) and real TLS handshakes; every flood is a bounded loop.
A stalled database is simulated by holding the trust domain lookup on an event, the only
fake here (issue 7, finding 5).
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import ssl
import threading
import time
import uuid
from collections import Counter

import grpc
import pytest

from attestors.node import join_token
from hallmark.protos import agent_pb2
from hallmark.x509svid import make_csr
from issuance.agentapi import tlsbuild
from issuance.agentapi.limits import Backoff, ExpiringSet, TokenBucket
from issuance.models import JoinToken
from tenants.events import publish_change
from tenants.models import AuditEvent
from tests.conftest import make_tenant
from tests.e2e.conftest import wait_for
from tests.hallmark.relay_helpers import client_context
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import (
    TIMEOUT,
    AgentApiClient,
    AgentIdentity,
    attest_call,
    running_server,
    server_svid_builds,
    wait_until_served,
)
from tests.issuance.conftest import bundle_pem, create_join_token
from trustdomains.keymanagers import KeyManagerUnavailable

pytestmark = pytest.mark.django_db(transaction=True)
FLOOD_THREADS = 4
FLOOD_HANDSHAKES = 25  # per thread
SHORT_CALL_TIMEOUT = 8.0  # a call the test expects refused at once, or held until it


def handshake(port: int, name: str) -> bool:
    """One TLS handshake with SNI `name`; whether the server accepted it."""
    return _raw_handshake(port, name) == "accepted"


def test_an_sni_flood_of_unknown_names_does_not_stall_a_legitimate_agent(agent_api, tenant_a):
    # given an attested agent, and a database whose trust domain lookups hang
    _, _, client = attested(agent_api, tenant_a)
    stalled, lookups = threading.Event(), []

    def hanging_lookup(**query):
        lookups.append(query)
        stalled.wait(TIMEOUT * 2)
        return None

    original, tlsbuild.lookup_tenant = tlsbuild.lookup_tenant, hanging_lookup
    try:
        # when anonymous clients flood the port with handshakes for names nobody has
        def flood(thread: int) -> int:
            return sum(
                handshake(agent_api.port, f"flood-{thread}-{i}.example")
                for i in range(FLOOD_HANDSHAKES)
            )

        with concurrent.futures.ThreadPoolExecutor(FLOOD_THREADS) as pool:
            floods = [pool.submit(flood, t) for t in range(FLOOD_THREADS)]
            # then the agent's calls are answered meanwhile (within a deadline far below the
            # time a blocked lookup waits)
            for _ in range(5):
                response = client.stub.SyncAuthorizedEntries(
                    agent_pb2.SyncAuthorizedEntriesRequest(),
                    metadata=client.metadata,
                    timeout=TIMEOUT / 3,
                )
                assert response.agent_id.startswith(f"spiffe://{tenant_a.trust_domain}/")
            accepted = sum(f.result(timeout=TIMEOUT * 3) for f in floods)

        # and no flood handshake was accepted; lookups in flight stayed bounded
        assert accepted == 0
        assert 0 < len(lookups) <= 32
    finally:
        stalled.set()
        tlsbuild.lookup_tenant = original
        client.close()


def test_an_unknown_name_is_looked_up_once_and_the_cache_of_unknown_names_is_bounded(
    agent_api, tenant_a
):
    credentials = agent_api.server.credentials
    credentials._unknown = ExpiringSet(max_size=10, ttl=3600)
    budget, credentials._lookup_budget = credentials._lookup_budget, TokenBucket(rate=0, burst=100)
    calls: list[str] = []
    original = tlsbuild.lookup_tenant

    def counting_lookup(**query):
        calls.append(query.get("trust_domain", ""))
        return original(**query)

    tlsbuild.lookup_tenant = counting_lookup
    try:
        # when one unknown name is tried until its lookup is known to have failed, then again
        wait_for(
            lambda: (
                not handshake(agent_api.port, "nobody.example")
                and "nobody.example" in credentials._unknown
            ),
            TIMEOUT,
            "the unknown name cached",
        )
        for _ in range(20):
            assert not handshake(agent_api.port, "nobody.example")
        # then it was looked up once
        assert calls.count("nobody.example") == 1

        # when 40 more unknown names come
        for i in range(40):
            handshake(agent_api.port, f"other-{i}.example")
        wait_for(lambda: len(calls) >= 41 or None, TIMEOUT, "the lookups done")

        # then the cache holds at most its bound, the newest names, not an emptied set
        assert len(credentials._unknown) == 10
        assert "nobody.example" not in credentials._unknown
        # and a real tenant is still served
        assert handshake(agent_api.port, tenant_a.trust_domain)
    finally:
        tlsbuild.lookup_tenant = original
        credentials._lookup_budget = budget


def test_a_flood_of_new_names_buys_no_more_lookups_than_the_budget(agent_api, tenant_a):
    # given a lookup budget of five and no refill
    credentials = agent_api.server.credentials
    budget, credentials._lookup_budget = credentials._lookup_budget, TokenBucket(rate=0, burst=5)
    refused_before = agent_api.server._relay.refused_names
    calls: list[str] = []
    original = tlsbuild.lookup_tenant

    def counting_lookup(**query):
        if query.get("trust_domain"):  # (a tenant learnt by id from its event is no name)
            calls.append(query["trust_domain"])
        return original(**query)

    tlsbuild.lookup_tenant = counting_lookup
    try:
        # when 40 handshakes name 40 trust domains nobody has
        assert not any(handshake(agent_api.port, f"budget-{i}.example") for i in range(40))

        # then five were looked up, and every one was refused from its ClientHello, before
        # TLS (the relay's peek), while a tenant's name still takes the full handshake
        wait_for(lambda: len(calls) >= 5 or None, TIMEOUT, "the budgeted lookups")
        assert len(calls) == 5, calls
        assert agent_api.server._relay.refused_names - refused_before == 40
        assert handshake(agent_api.port, tenant_a.trust_domain)
        assert agent_api.server._relay.refused_names - refused_before == 40
    finally:
        tlsbuild.lookup_tenant = original
        credentials._lookup_budget = budget


def test_a_tenant_whose_server_svid_cannot_be_signed_backs_off(
    agent_api, tenant_a, tenant_b, caplog
):
    # given tenant B's server SVID cannot be signed (its key manager is down), with a long
    # back-off so the count below does not depend on time
    credentials = agent_api.server.credentials
    credentials._backoff = Backoff(base=3600, cap=3600)

    def failing_for_b(tenant_id):
        if tenant_id == tenant_b.tenant.id:
            raise KeyManagerUnavailable("the key manager is down")

    assert wait_until_served(agent_api.port, tenant_b.trust_domain)
    caplog.set_level(logging.INFO, logger="issuance.agentapi.tls")
    with server_svid_builds(before=failing_for_b) as built:
        credentials._cache.pop(tenant_b.trust_domain, None)
        # when B's name is handshaken until its first build has failed, then 30 times more
        wait_for(
            lambda: (
                handshake(agent_api.port, tenant_b.trust_domain)
                or tenant_b.tenant.id in built
                or None
            ),
            TIMEOUT,
            "the first build of B",
        )
        wait_for(
            lambda: credentials._backing_off(tenant_b.trust_domain) or None,
            TIMEOUT,
            "B backing off",
        )
        for _ in range(30):
            assert not handshake(agent_api.port, tenant_b.trust_domain)

        # then B was tried once, logged once and without a traceback
        assert built.count(tenant_b.tenant.id) == 1
        about_b = [
            r
            for r in caplog.records
            if r.name == "issuance.agentapi.tls" and tenant_b.trust_domain in r.getMessage()
        ]
        assert len(about_b) == 1 and about_b[0].exc_info is None
        # and tenant A is served all along
        assert wait_until_served(agent_api.port, tenant_a.trust_domain)


def attest_raw(client: AgentApiClient, trust_domain: str, data: bytes, timeout: float = TIMEOUT):  # type: ignore[no-untyped-def]
    return attest_call(
        client.stub,
        agent_pb2.AttestAgentRequest(
            trust_domain=trust_domain,
            attestation_type="join_token",
            attestation_data=data,
            csr=make_csr(AgentIdentity.fresh().key),
        ),
        metadata=client.metadata,
        timeout=timeout,
    )


def attest_failures(handle) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            tenant=handle.tenant, action="agent.attest", outcome__in=("failure", "denied")
        ).order_by("id")
    )


def test_an_attestation_failure_flood_is_rate_limited_and_aggregated(settings, tenant_a, tenant_b):
    settings.ATTEST_FAILURE_LIMIT = 5
    settings.ATTEST_REFUSAL_DELAY_MS = 0  # every refusal at once: 27 of them on one connection
    with running_server() as server:
        # given a real attestation of A, then a flood of 30 bad join tokens from one address
        identity, _, good = attested(server, tenant_a)
        good.close()
        valid = create_join_token(tenant_a)
        client = AgentApiClient(
            server.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
        )
        codes = []
        try:
            for i in range(30):
                with pytest.raises(grpc.RpcError) as failure:
                    attest_raw(client, tenant_a.trust_domain, join_token.attestation_data(f"x{i}"))
                codes.append((failure.value.code(), failure.value.details().split(":")[0]))
            # then after 5 failures the address is refused, even with a valid token, and the
            # token is not spent (refused before any database work)
            with pytest.raises(grpc.RpcError) as refused:
                attest_raw(
                    client, tenant_a.trust_domain, join_token.attestation_data(valid["token"])
                )
            # and refused before its request is read: even one naming another trust domain
            with pytest.raises(grpc.RpcError) as before_reading:
                attest_raw(client, tenant_b.trust_domain, join_token.attestation_data("x"))
        finally:
            client.close()
        assert all(code != grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in codes[:5])
        assert set(codes[5:]) == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")}
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert before_reading.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with tenant_a.schema():
            assert JoinToken.objects.get(pk=valid["id"]).used_at is None

        # when the window's aggregate is written
        import asyncio

        asyncio.run_coroutine_threadsafe(
            server.server.flush_attestation_failures(everything=True), server.loop
        ).result(timeout=TIMEOUT)

    # then A's trail holds its real attestation, the flood's first failure, and one row
    # counting the other 31 attempts of that address and window
    rows = attest_failures(tenant_a)
    assert len(rows) == 2, [r.detail for r in rows]
    first, aggregate = rows
    assert first.detail["code"] and "aggregated" not in first.detail
    assert aggregate.detail["aggregated"] is True and aggregate.detail["count"] == 31
    assert aggregate.detail["codes"]["rate_limited"] == 27
    assert aggregate.source == first.source.rsplit(":", 1)[0]
    assert AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action="agent.attest", outcome="success", target=identity.spiffe_id
    ).exists()
    # and tenant B's trail has none of it
    assert attest_failures(tenant_b) == []


def test_oversized_attestation_data_is_refused_with_a_code(agent_api, tenant_a):
    token = create_join_token(tenant_a)
    client = AgentApiClient(
        agent_api.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
    )
    oversized = join_token.attestation_data(token["token"]) + b"\x00" * (64 * 1024)
    try:
        with pytest.raises(grpc.RpcError) as failure:
            attest_raw(client, tenant_a.trust_domain, oversized)
    finally:
        client.close()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith("attestation_data_too_large:")
    with tenant_a.schema():
        assert JoinToken.objects.get(pk=token["id"]).used_at is None
    [row] = attest_failures(tenant_a)
    assert row.detail["code"] == "attestation_data_too_large"


def _raw_handshake(port: int, server_name: str) -> str:
    """One TLS handshake with SNI `server_name`: "accepted", "tls alert" (the server spoke
    TLS and refused), or "closed before tls" (reset or closed with no TLS byte sent)."""
    context = client_context()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=server_name),
        ):
            return "accepted"
    except ssl.SSLEOFError:
        return "closed before tls"
    except ssl.SSLError:
        return "tls alert"
    except ConnectionError:
        return "closed before tls"


def test_a_source_over_its_failure_limit_is_refused_at_accept_and_counted(settings, tenant_a):
    settings.ATTEST_FAILURE_LIMIT = 3
    settings.ATTEST_REFUSAL_DELAY_MS = 0
    with running_server() as server:
        # given a legitimate agent's open connection, and a source (this address) whose
        # connections complete their handshakes
        identity, _, agent = attested(server, tenant_a)
        assert _raw_handshake(server.port, tenant_a.trust_domain) == "accepted"
        relay = server.server._relay
        client = AgentApiClient(
            server.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
        )
        try:
            # when the source fails its attestations up to the limit
            for i in range(3):
                with pytest.raises(grpc.RpcError) as failure:
                    attest_raw(client, tenant_a.trust_domain, join_token.attestation_data(f"x{i}"))
                assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED

            # then its new connections are closed at accept, before any TLS byte, and counted
            refused_before = relay.refused_sources
            assert [_raw_handshake(server.port, tenant_a.trust_domain) for _ in range(3)] == [
                "closed before tls"
            ] * 3
            assert relay.refused_sources - refused_before == 3
            # while connections it already holds go on: the agent's calls are answered
            response = agent.stub.SyncAuthorizedEntries(
                agent_pb2.SyncAuthorizedEntriesRequest(), metadata=agent.metadata, timeout=TIMEOUT
            )
            assert response.agent_id == identity.spiffe_id
        finally:
            client.close()
            agent.close()
        import asyncio

        asyncio.run_coroutine_threadsafe(
            server.server.flush_attestation_failures(everything=True), server.loop
        ).result(timeout=TIMEOUT)

    # and the tenant's aggregated audit row counts the connections refused at accept
    aggregates = [r for r in attest_failures(tenant_a) if r.detail.get("aggregated")]
    assert sum(r.detail.get("connections_refused", 0) for r in aggregates) == 3


def test_a_source_that_does_not_wait_for_its_refusals_is_disconnected(settings, tenant_a):
    from issuance.agentapi.servicer import MAX_HELD_REFUSALS_PER_SOURCE

    settings.ATTEST_FAILURE_LIMIT = 1
    settings.ATTEST_REFUSAL_DELAY_MS = 600_000  # held refusals never answer within the test
    with running_server() as server:
        client = AgentApiClient(
            server.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
        )
        try:
            # given a source over its limit
            with pytest.raises(grpc.RpcError) as failure:
                attest_raw(client, tenant_a.trust_domain, join_token.attestation_data("x"))
            assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED

            # when it sends one attestation more than may wait out their delay, at once
            def attempt(i: int) -> tuple[grpc.StatusCode, str]:
                try:
                    attest_raw(
                        client,
                        tenant_a.trust_domain,
                        join_token.attestation_data(f"y{i}"),
                        timeout=SHORT_CALL_TIMEOUT,
                    )
                except grpc.RpcError as error:
                    return error.code(), (error.details() or "").split(":")[0]
                return grpc.StatusCode.OK, "attested"

            count = MAX_HELD_REFUSALS_PER_SOURCE + 1
            # (a call that goes out after the close on a connection of its own and is held
            # waits for its deadline: DEADLINE_EXCEEDED, allowed below; a short one keeps the
            # test from waiting the default 30 s for it)
            with concurrent.futures.ThreadPoolExecutor(count) as pool:
                answers = list(pool.map(attempt, range(count)))
        finally:
            client.close()

    # then the one past the cap is refused at once and its connection closed, which ends the
    # held ones (without the close they would wait out the delay, past the call timeout;
    # without the delay all would be refused at once); a call that the client sent after the
    # close finds the source refused at accept
    limited = (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
    codes = Counter(code for code, _ in answers)
    assert answers.count(limited) <= 1, answers
    assert codes[grpc.StatusCode.UNAVAILABLE] >= 1, answers
    assert set(codes) <= {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }, answers


def test_a_new_tenant_is_learnt_from_its_event_but_its_credentials_wait_for_an_agent(
    agent_api, tenant_a
):
    # given the agent API running and knowing tenant A (an event names one tenant: another's
    # name must not stand in for it), counting the server SVIDs it builds
    credentials = agent_api.server.credentials
    wait_for(lambda: tenant_a.trust_domain in credentials._directory or None, TIMEOUT, "A")
    with server_svid_builds() as built:
        # when a tenant signs up while it runs
        tenant = make_tenant("fresh")
        name = tenant.trust_domain

        # then its provisioning's event teaches it the name, and builds nothing: a signup
        # costs the agent API one query, not a key, a signature and a key-manager token
        wait_for(lambda: name in credentials._directory or None, TIMEOUT, "the name learnt")
        time.sleep(0.5)  # a build would have started within microseconds of the learning
        assert built == []
        assert name not in credentials._cache
        # nor does a later change of its bundle, while no agent has named it
        publish_change(tenant_id=tenant.tenant.id, kind="bundle")
        time.sleep(0.5)
        assert built == []

        # and the first handshake naming it succeeds: it waits for the build it starts
        assert _raw_handshake(agent_api.port, name) == "accepted"
        assert built == [tenant.tenant.id]
        assert name in credentials._cache


def test_a_name_found_absent_then_signed_up_is_served_at_once(agent_api):
    from tenants import services

    # given a name an agent named before anyone had it (looked up, remembered absent)
    credentials = agent_api.server.credentials
    name = f"late-{uuid.uuid4().hex[:8]}.test"
    assert _raw_handshake(agent_api.port, name) != "accepted"
    wait_for(lambda: name in credentials._unknown or None, TIMEOUT, "the name found absent")

    # when a tenant signs up with it, then once its event taught the agent API the name,
    # the next handshake is served (not refused as absent until the memory of it expires)
    tenant = services.signup(
        name="Late",
        trust_domain=name,
        email=f"owner@{name}",
        password="correct horse battery staple",
    )
    wait_for(lambda: name in credentials._directory or None, TIMEOUT, "the name learnt")
    assert _raw_handshake(agent_api.port, name) == "accepted"
    assert credentials._directory[name] == tenant.tenant.id


def test_a_bundle_change_refreshes_the_credentials_held_at_once(agent_api, tenant_a):
    # given tenant A's credentials held, and no handshake from here on (a handshake re-reads
    # the roots every ROOTS_REFRESH_SECONDS of its own accord)
    credentials = agent_api.server.credentials
    assert wait_until_served(agent_api.port, tenant_a.trust_domain)
    refreshed: list[str] = []
    original = tlsbuild.refresh

    def counting_refresh(held):
        refreshed.append(held.trust_domain)
        return original(held)

    tlsbuild.refresh = counting_refresh
    try:
        # when A's bundle changes (a rotation, a taint), then A's credentials are re-read
        publish_change(tenant_id=tenant_a.tenant.id, kind="bundle")
        wait_for(lambda: refreshed or None, TIMEOUT, "the refresh")
        assert set(refreshed) == {tenant_a.trust_domain}
        assert tenant_a.trust_domain in credentials._cache
    finally:
        tlsbuild.refresh = original


def _held_refresh(agent_api, tenant, *, first_fails: bool) -> list[str]:
    """Publish two bundle changes of `tenant` (its credentials held), the second while the
    refresh the first started is still running; then let that refresh end (failing, when
    `first_fails`). The refreshes run, as their outcomes."""
    assert wait_until_served(agent_api.port, tenant.trust_domain)
    started, release, runs = threading.Event(), threading.Event(), []
    original = tlsbuild.refresh

    def held_refresh(held):
        if not runs:
            runs.append("first")
            started.set()
            release.wait(TIMEOUT)
            if first_fails:
                raise KeyManagerUnavailable("the key manager is down")
            return original(held)
        runs.append("again")
        return original(held)

    tlsbuild.refresh = held_refresh
    try:
        publish_change(tenant_id=tenant.tenant.id, kind="bundle")
        assert started.wait(TIMEOUT)
        publish_change(tenant_id=tenant.tenant.id, kind="bundle")
        credentials = agent_api.server.credentials
        wait_for(lambda: tenant.trust_domain in credentials._again or None, TIMEOUT, "again")
        release.set()
        if first_fails:
            wait_for(lambda: credentials._backing_off(tenant.trust_domain) or None, TIMEOUT, "")
            time.sleep(0.5)  # a refresh run again would have started by now
        else:
            wait_for(lambda: len(runs) > 1 or None, TIMEOUT, "the refresh run again")
        return runs
    finally:
        release.set()
        tlsbuild.refresh = original


def test_a_change_during_a_refresh_refreshes_again_after_it(agent_api, tenant_a):
    # the running refresh may have read the database before the change
    assert _held_refresh(agent_api, tenant_a, first_fails=False) == ["first", "again"]


def test_a_change_during_a_failing_refresh_waits_for_its_back_off(agent_api, tenant_a):
    # a tenant whose refresh failed is not tried again at once for a change
    assert _held_refresh(agent_api, tenant_a, first_fails=True) == ["first"]


def test_a_handshake_naming_a_tenant_with_no_credentials_waits_for_them(agent_api, tenant_a):
    # given tenant A's credentials dropped (as after a restart), its name still known
    credentials = agent_api.server.credentials
    assert wait_until_served(agent_api.port, tenant_a.trust_domain)
    credentials._cache.pop(tenant_a.trust_domain)

    # when one agent's handshake names it, then it is served (not refused until a retry):
    # the relay held it until the credentials were built
    assert _raw_handshake(agent_api.port, tenant_a.trust_domain) == "accepted"
    assert tenant_a.trust_domain in credentials._cache
    assert not credentials._building  # nothing left waiting


def test_what_a_first_handshake_waits_for_ends_when_the_build_does(agent_api, tenant_a):
    # given tenant A's credentials dropped (as after a restart), its name still known
    credentials = agent_api.server.credentials
    assert wait_until_served(agent_api.port, tenant_a.trust_domain)
    credentials._cache.pop(tenant_a.trust_domain)

    # when the relay asks what a handshake naming A waits for, then it is the build it
    # queued, which ends with the credentials held (a wait that never ended would hold every
    # first handshake for half its time)
    build = credentials.build_awaited(tenant_a.trust_domain)
    assert build is not None
    build.result(timeout=TIMEOUT)
    assert tenant_a.trust_domain in credentials._cache
    assert credentials.build_awaited(tenant_a.trust_domain) is None  # served: nothing to wait


def test_a_handshake_waits_for_credentials_no_longer_than_its_deadline(settings, tenant_a):
    # given a one-second handshake deadline, and server SVID builds that hang for longer
    # than the client below waits for an answer
    settings.AGENT_API_HANDSHAKE_TIMEOUT = 1
    release = threading.Event()
    with server_svid_builds(before=lambda _: release.wait(TIMEOUT * 3)):
        with running_server() as server:
            try:
                # when a handshake names tenant A, whose credentials were never built, then
                # it is refused within its deadline while the build still hangs (asyncio's
                # TLS transport closes on the SNI callback's alert): a relay that waited for
                # the build would leave the client to time out (an exception here)
                assert _raw_handshake(server.port, tenant_a.trust_domain) != "accepted"
                assert tenant_a.trust_domain in server.server.credentials._building
            finally:
                release.set()  # before the server stops: it waits for its builds
