"""A draining agent API: the call in flight finishes, streams end, new connections are refused."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection, transaction

from issuance.agentapi.drain import DRAINING_DETAIL
from issuance.agentapi.recheck import RECHECK_WINDOW_SECONDS
from tests.e2e.conftest import wait_for
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)


def _hold_agent_row(handle, spiffe_id: str, locked: threading.Event, release: threading.Event):  # type: ignore[no-untyped-def]
    from issuance.models import Agent

    try:
        with handle.schema(), transaction.atomic():
            Agent.objects.select_for_update().get(spiffe_id=spiffe_id)
            locked.set()
            release.wait(60)
    finally:
        connection.close()


def _calls_waiting_for_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return int(cursor.fetchone()[0])


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_drain_finishes_the_call_in_flight_ends_streams_and_refuses_new_connections(tenant_a):
    server = ServerThread()
    server.start()
    release = threading.Event()
    pool = ThreadPoolExecutor(2)
    try:
        # given an agent watching, and its renewal in flight (held on its row's lock)
        identity, _, client = attested(server, tenant_a)
        stream = client.watch()
        next(stream)
        locked = threading.Event()
        pool.submit(_hold_agent_row, tenant_a, identity.spiffe_id, locked, release)
        assert locked.wait(30)
        renewal = pool.submit(client.renew, ec.generate_private_key(ec.SECP256R1()))
        wait_for(lambda: _calls_waiting_for_a_lock() > 0, 30, "the renewal to wait in flight")

        # when the server drains (what SIGTERM does)
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(), server.loop)

        # then the stream ends at once with UNAVAILABLE, so the agent reconnects elsewhere
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert DRAINING_DETAIL in (ended.value.details() or "")
        # and a new connection is refused while the renewal is still in flight
        wait_for(lambda: _refused(server.port), 30, "new connections to be refused")
        assert not renewal.done() and not stopping.done()

        # and when the lock goes, the call in flight finishes with its answer
        release.set()
        answer = renewal.result(timeout=30)
        assert answer.svid_chain
        stopping.result(timeout=30)
        client.close()
    finally:
        release.set()
        pool.shutdown(wait=True)
        server.loop.call_soon_threadsafe(server.loop.stop)


def test_a_method_the_agent_api_does_not_have_is_unimplemented_not_a_failure(agent_api, tenant_a):
    """The drain interceptor wraps server streams only: an unknown method has no handler,
    and gRPC must still answer it UNIMPLEMENTED (the agent's version skew), not UNKNOWN."""
    _, _, client = attested(agent_api, tenant_a)
    unknown = client.channel.unary_unary("/hallmark.agent.v1.AgentAPI/NoSuchCall")

    with pytest.raises(grpc.RpcError) as failure:
        unknown(b"", metadata=client.metadata, timeout=10)
    client.close()

    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_stream_opened_while_draining_is_refused_on_a_connection_already_open(
    agent_api, tenant_a
):
    """The listener refuses new connections once draining; an agent's connection that is
    already open must not start a new stream there either."""
    _, _, client = attested(agent_api, tenant_a)
    client.fetch_bundle()  # the connection is up before the drain
    agent_api.loop.call_soon_threadsafe(agent_api.server.drain.drain)
    rechecks = agent_api.server.servicer.rechecks

    calls_before = rechecks.calls
    with pytest.raises(grpc.RpcError) as refused:
        next(client.watch(timeout=10))
    bundle = client.fetch_bundle()  # unary calls are left to stop(grace)
    client.close()
    time.sleep(RECHECK_WINDOW_SECONDS * 2)  # a re-check the stream queued would be made by now

    # refused before the stream's body ran: it queued no re-check of its agent
    assert rechecks.calls == calls_before

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == DRAINING_DETAIL
    assert bundle.trust_domain == tenant_a.trust_domain
