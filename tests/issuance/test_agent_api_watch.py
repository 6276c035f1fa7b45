"""WatchUpdates over the real TLS agent API: notices pushed through Redis, bans end streams."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

from issuance.agentapi.watch import ChangeHub
from tenants.events import ChangeEvent
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import AgentApiClient
from tests.issuance.conftest import bundle_pem, create_entry

pytestmark = pytest.mark.django_db(transaction=True)


def _head(handle) -> int:
    from issuance import services

    with handle.schema():
        return services.current_revisions().head


def test_first_notice_comes_at_once_with_the_current_revisions(agent_api, tenant_a):
    # given an agent and an entry
    identity, _, client = attested(agent_api, tenant_a)
    create_entry(tenant_a, "/w", parent_id=identity.spiffe_id)

    # when it opens the stream
    stream = client.watch()
    notice = next(stream)
    stream.cancel()
    client.close()

    # then the first notice carries the tenant's head revision and bundle sequence
    bundle = tenant_a.client.get("/api/v1/bundle").json()
    assert notice.entries_revision == _head(tenant_a)
    assert notice.bundle_sequence == bundle["spiffe_sequence"]
    assert not notice.resync


def test_a_new_entry_is_pushed_to_the_agent(agent_api, tenant_a):
    # given an agent watching
    identity, _, client = attested(agent_api, tenant_a)
    stream = client.watch()
    first = next(stream)
    latencies = []

    # when entries are created, one at a time
    for i in range(5):
        created_at = time.perf_counter()
        entry = create_entry(tenant_a, f"/pushed/{i}", parent_id=identity.spiffe_id)
        notice = next(stream)
        latencies.append(time.perf_counter() - created_at)

        # then a notice arrives with the new revision, and a sync from the old one finds it
        assert notice.entries_revision == entry["revision"] > first.entries_revision
    page = client.sync(first.entries_revision)
    stream.cancel()
    client.close()
    assert len(page.entries) == 5
    print(
        "\npush latency (REST create call started -> notice read), ms: "
        + ", ".join(f"{s * 1000:.1f}" for s in latencies)
    )


def test_a_banned_agents_stream_ends_with_permission_denied(agent_api, tenant_a):
    # given an agent watching
    _, _, client = attested(agent_api, tenant_a)
    stream = client.watch()
    next(stream)

    # when the tenant bans it
    [agent] = tenant_a.client.get("/api/v1/agents").json()
    assert tenant_a.client.post(f"/api/v1/agents/{agent['id']}/ban").status_code == 200

    # then its stream ends, refused
    with pytest.raises(grpc.RpcError) as failure:
        next(stream)
    client.close()
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("agent_banned:")


def _until_revision(stream, revision: int) -> int:
    """Notices read until one carries `revision` or later (the re-check's own comes first)."""
    while (notice := next(stream)).entries_revision < revision:
        pass
    return notice.entries_revision


def test_a_ban_rechecks_every_watching_agent_in_one_database_call(agent_api, tenant_a):
    # given five agents of one tenant watching
    agents = [attested(agent_api, tenant_a) for _ in range(5)]
    streams = [client.watch() for _, _, client in agents]
    for stream in streams:
        next(stream)
    calls_before = agent_api.server.servicer.rechecks.calls

    # when the tenant bans the first (its "agents" event wakes every stream of the tenant)
    banned_id = agents[0][0].spiffe_id
    [banned] = [
        a for a in tenant_a.client.get("/api/v1/agents").json() if a["spiffe_id"] == banned_id
    ]
    assert tenant_a.client.post(f"/api/v1/agents/{banned['id']}/ban").status_code == 200

    # then the banned agent's stream ends, refused, and the others go on to the next change
    with pytest.raises(grpc.RpcError) as failure:
        next(streams[0])
    entry = create_entry(tenant_a, "/after-ban", parent_id=agents[1][0].spiffe_id)
    later = [_until_revision(stream, entry["revision"]) for stream in streams[1:]]
    rechecks = agent_api.server.servicer.rechecks.calls - calls_before
    for stream in streams:
        stream.cancel()
    for _, _, client in agents:
        client.close()
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("agent_banned:")
    assert later == [entry["revision"]] * 4
    # and the five re-checks shared the database: one call (two if the ban's events straddled
    # a batch), not one a stream
    assert 1 <= rechecks <= 2


def test_an_evicted_agents_stream_ends(agent_api, tenant_a):
    _, _, client = attested(agent_api, tenant_a)
    stream = client.watch()
    next(stream)
    [agent] = tenant_a.client.get("/api/v1/agents").json()
    assert tenant_a.client.delete(f"/api/v1/agents/{agent['id']}").status_code == 204
    with pytest.raises(grpc.RpcError) as failure:
        next(stream)
    client.close()
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("agent_not_attested:")


def test_watch_without_an_agent_svid_is_refused(agent_api, tenant_a):
    client = AgentApiClient(
        agent_api.port, server_name=tenant_a.trust_domain, roots_pem=bundle_pem(tenant_a)
    )
    with pytest.raises(grpc.RpcError) as failure:
        next(client.watch())
    client.close()
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert failure.value.details().startswith("no_client_certificate:")


def test_another_tenants_changes_do_not_wake_an_agent(agent_api, tenant_a, tenant_b):
    # given agents of A and B watching
    a_identity, _, a_client = attested(agent_api, tenant_a)
    b_identity, _, b_client = attested(agent_api, tenant_b)
    a_stream, b_stream = a_client.watch(), b_client.watch()
    a_first, b_first = next(a_stream), next(b_stream)

    # when B registers an entry, and then A does
    b_entry = create_entry(tenant_b, "/b", parent_id=b_identity.spiffe_id)
    assert next(b_stream).entries_revision == b_entry["revision"]
    a_entry = create_entry(tenant_a, "/a", parent_id=a_identity.spiffe_id)

    # then A's next notice is about A's entry (B's woke nothing of A's), at A's revision
    a_notice = next(a_stream)
    a_stream.cancel()
    b_stream.cancel()
    a_client.close()
    b_client.close()
    assert a_notice.entries_revision == a_entry["revision"] > a_first.entries_revision
    assert b_first.entries_revision < b_entry["revision"]


def test_hub_wakes_only_the_event_tenants_streams_and_coalesces_bursts():
    async def scenario():
        async def publish(tenant_id):
            return None

        hub = ChangeHub(publish)
        a, b = uuid.uuid4(), uuid.uuid4()
        a_watcher, b_watcher = hub.subscribe(a), hub.subscribe(b)
        for _ in range(50):
            hub.dispatch(ChangeEvent(tenant_id=b, kind="entries", at=time.time()))
        hub.dispatch(ChangeEvent(tenant_id=b, kind="bundle", at=time.time()))
        a_kinds = await a_watcher.wait(0.05)
        b_kinds = await b_watcher.wait(0.05)
        b_again = await b_watcher.wait(0.05)
        reads = []

        async def read():
            reads.append(1)
            return (7, 3)

        shared = await asyncio.gather(*(hub.revisions(b, read) for _ in range(10)))
        hub.unsubscribe(a_watcher)
        hub.unsubscribe(b_watcher)
        return a_kinds, b_kinds, b_again, shared, len(reads), hub.watching(b)

    a_kinds, b_kinds, b_again, shared, reads, left = asyncio.run(scenario())
    assert a_kinds == set()
    assert b_kinds == {"entries", "bundle"} and b_again == set()
    assert shared == [(7, 3)] * 10 and reads == 1
    assert left == 0


def _watching(agent_api, tenant) -> int:
    return agent_api.server.servicer.hub.watching(tenant.id)


def test_a_federation_change_asks_for_a_resync_and_an_entry_change_rechecks_nobody(
    agent_api, tenant_a
):
    from tenants.events import publish_change

    # given an agent watching, its first check done: one database call
    identity, _, client = attested(agent_api, tenant_a)
    calls_at_open = agent_api.server.servicer.rechecks.calls
    stream = client.watch()
    next(stream)
    calls_before = agent_api.server.servicer.rechecks.calls
    assert calls_before - calls_at_open == 1

    # when an entry changes, then a federated bundle does
    entry = create_entry(tenant_a, "/entry", parent_id=identity.spiffe_id)
    after_entry = next(stream)
    rechecks_for_entry = agent_api.server.servicer.rechecks.calls - calls_before
    publish_change(tenant_id=tenant_a.tenant.id, kind="federation")
    after_federation = next(stream)
    stream.cancel()
    client.close()

    # then the entry's notice carries its revision and no resync, and woke no re-check (only
    # "agents" and "bundle" changes, and keepalives, re-check an agent); the federation
    # notice asks for a fetch outright (a federated bundle has no revision of its own)
    assert after_entry.entries_revision == entry["revision"] and not after_entry.resync
    assert rechecks_for_entry == 0
    assert after_federation.resync


def test_a_keepalive_rechecks_the_agent_so_a_ban_without_an_event_still_ends_its_stream(
    agent_api, tenant_a, monkeypatch
):
    from issuance.agentapi import servicer
    from issuance.models import Agent

    # given an agent watching with a short keepalive
    monkeypatch.setattr(servicer, "WATCH_KEEPALIVE_SECONDS", 0.2)
    identity, _, client = attested(agent_api, tenant_a)
    stream = client.watch(timeout=10)
    next(stream)

    # when its row is banned behind the API's back (no "agents" event is published)
    with tenant_a.schema():
        assert Agent.objects.filter(spiffe_id=identity.spiffe_id).update(banned=True) == 1

    # then a keepalive's re-check ends the stream, refused, well before the call's deadline
    with pytest.raises(grpc.RpcError) as failure:
        for _ in range(40):
            next(stream)
    client.close()
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure.value.details().startswith("agent_banned:")


def test_a_stream_its_agent_leaves_ends_at_once_and_leaves_no_watcher_behind(agent_api, tenant_a):
    """Not at the next keepalive (30 s), nor never: the drain interceptor waited for each
    message in a task of its own, which the call's cancellation did not reach, so a stream
    whose agent went away went on re-checking its agent, subscribed, until a full collection."""
    _, _, client = attested(agent_api, tenant_a)
    stream = client.watch()
    next(stream)
    assert _watching(agent_api, tenant_a.tenant) == 1

    stream.cancel()
    client.close()

    deadline = time.monotonic() + 5
    while _watching(agent_api, tenant_a.tenant) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _watching(agent_api, tenant_a.tenant) == 0
    # nor its wait for a drain: one task a stream ended would pile up until the process stops
    assert _tasks_waiting_for_a_drain(agent_api) == 0


def _tasks_waiting_for_a_drain(agent_api) -> int:
    async def count() -> int:
        return sum(
            1
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "Event.wait"
            and task.get_coro().cr_frame is not None
            and task.get_coro().cr_frame.f_locals.get("self") is agent_api.server.drain._event()
        )

    return asyncio.run_coroutine_threadsafe(count(), agent_api.loop).result(timeout=10)


def _hub_over_a_queue():
    """A hub whose publish and listen go through an in-memory queue (Redis's part), and the
    tenants of what it published."""
    queue: asyncio.Queue[ChangeEvent] = asyncio.Queue()
    published: list[uuid.UUID] = []

    async def publish(tenant_id):
        published.append(tenant_id)
        await queue.put(ChangeEvent(tenant_id=tenant_id, kind="entries", at=time.time()))

    async def listen():
        while True:
            yield await queue.get()

    return ChangeHub(publish, listen), queue, published


def test_the_hub_starts_once_its_own_probe_comes_back_and_hands_the_probe_to_nobody(
    monkeypatch, caplog
):
    from issuance.agentapi import watch

    monkeypatch.setattr(watch, "READY_TIMEOUT_SECONDS", 2.0)

    async def scenario():
        hub, queue, published = _hub_over_a_queue()
        heard: list[ChangeEvent] = []
        hub.on_event(heard.append)
        await hub.start()
        probes = list(published)
        tenant = uuid.uuid4()
        watcher = hub.subscribe(tenant)
        await queue.put(ChangeEvent(tenant_id=tenant, kind="agents", at=time.time()))
        kinds = await watcher.wait(2.0)
        await hub.close()
        return probes, heard, kinds, tenant

    probes, heard, kinds, tenant = asyncio.run(scenario())

    # its probe came back: no warning, and the probe reached no listener; a real event after
    # it reaches the listeners and the tenant's streams
    assert probes and not any("not heard back" in r.getMessage() for r in caplog.records)
    assert [event.tenant_id for event in heard] == [tenant]
    assert kinds == {"agents"}


def test_a_failing_event_listener_is_logged_and_the_others_and_the_streams_still_hear(caplog):
    async def scenario():
        hub, queue, _ = _hub_over_a_queue()
        heard: list[ChangeEvent] = []

        def broken(event):
            raise RuntimeError("listener bug")

        hub.on_event(broken)
        hub.on_event(heard.append)
        tenant = uuid.uuid4()
        watcher = hub.subscribe(tenant)
        hub.dispatch(ChangeEvent(tenant_id=tenant, kind="bundle", at=time.time()))
        kinds = await watcher.wait(1.0)
        return heard, kinds

    heard, kinds = asyncio.run(scenario())

    assert len(heard) == 1 and kinds == {"bundle"}
    assert any(
        record.getMessage().startswith("change listener") and record.exc_info
        for record in caplog.records
    )


def _refused(*args, **kwargs):
    from issuance.errors import AgentDenied

    raise AgentDenied("this tenant is suspended by the platform operator", code="tenant_suspended")


def _broken(*args, **kwargs):
    raise RuntimeError("the database went away")


@pytest.mark.parametrize(
    ("module", "name", "failure", "status", "detail", "logged"),
    [
        # an unexpected failure of the re-check: INTERNAL, logged with its traceback
        (
            "issuance.services",
            "authenticate_agents",
            _broken,
            "INTERNAL",
            "internal_error:",
            "watch: re-checking an agent of tenant",
        ),
        # of the revisions read: UNAVAILABLE (the agent reconnects), logged likewise
        (
            "issuance.agentapi.servicer",
            "_tenant_revisions",
            _broken,
            "UNAVAILABLE",
            "internal_error:",
            "watch: reading revisions of tenant",
        ),
        # a refusal while reading revisions: its own code, nothing logged as a failure
        (
            "issuance.agentapi.servicer",
            "_tenant_revisions",
            _refused,
            "PERMISSION_DENIED",
            "tenant_suspended:",
            None,
        ),
    ],
    ids=["recheck-fails", "revisions-fail", "revisions-refused"],
)
def test_a_failing_watch_step_ends_the_stream_with_its_code(  # noqa: PLR0913 - the case's fields
    agent_api, tenant_a, monkeypatch, caplog, module, name, failure, status, detail, logged
):
    import importlib

    _, _, client = attested(agent_api, tenant_a)
    monkeypatch.setattr(importlib.import_module(module), name, failure)

    with pytest.raises(grpc.RpcError) as ended:
        next(client.watch())
    client.close()

    assert ended.value.code() == getattr(grpc.StatusCode, status)
    assert ended.value.details().startswith(detail)
    failures = [
        r.getMessage() for r in caplog.records if r.exc_info and r.name.startswith("issuance")
    ]
    if logged:
        assert any(message.startswith(logged) for message in failures), failures
    else:
        assert not failures, failures
