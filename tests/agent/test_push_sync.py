"""Push and incremental sync: the agent against the agent API stand-in, in one event loop.

The stand-in follows agent.proto (revisions, paging, `full`, WatchUpdates); the agent runs its
real loop (`AgentManager.run`) and serves the Workload API on a real socket.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import grpc

from agent.manager import AgentManager
from agent.state import AgentState
from agent.workload.server import WorkloadApiServer
from hallmark.bundle import Bundle
from hallmark.signing import LocalSigner
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import build_signing_certificate, utcnow
from tests.agent.agent_api_standin import AgentApiStandin, StandinEntry
from tests.agent.test_manager import config_for, run

HEADER = (("workload.spiffe.io", "true"),)


def _entry(n: int, **fields: object) -> StandinEntry:
    return StandinEntry(f"e{n}", f"spiffe://example.org/w{n}", [f"unix:uid:{5000 + n}"], **fields)  # type: ignore[arg-type]


def test_incremental_sync_pages_and_applies_removals(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given five entries and an agent syncing two entries a page
        for n in range(5):
            standin.servicer.put_entry(_entry(n))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp), state)
        manager.page_size = 2
        await manager.bootstrap()

        # when it syncs from scratch
        await manager.sync_once()

        # then it paged through three pages and holds all five SVIDs
        assert standin.servicer.calls.syncs == [(0, 2), (2, 2), (4, 2)]
        assert set(state.snapshot.svids) == {f"e{n}" for n in range(5)}
        assert manager.revision == 5
        serials = {k: v.svid.leaf.serial_number for k, v in state.snapshot.svids.items()}

        # when two entries are removed and one added at the server
        standin.servicer.remove_entry("e1")
        standin.servicer.remove_entry("e3")
        standin.servicer.put_entry(_entry(9))
        standin.servicer.calls.batches.clear()
        await manager.sync_once()

        # then only the changes were asked for and applied; untouched SVIDs are kept
        assert standin.servicer.calls.syncs[-2:] == [(5, 2), (7, 2)]
        assert set(state.snapshot.svids) == {"e0", "e2", "e4", "e9"}
        assert standin.servicer.calls.batches == [["e9"]]
        for kept in ("e0", "e2", "e4"):
            assert state.snapshot.svids[kept].svid.leaf.serial_number == serials[kept]

    run(scenario, tmp_path)


def test_agent_behind_the_removal_history_replaces_its_whole_set(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        standin.servicer.put_entry(_entry(1))
        standin.servicer.put_entry(_entry(2))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp), state)
        await manager.bootstrap()
        await manager.sync_once()

        # when e2 is removed and the server forgets its removal history
        standin.servicer.remove_entry("e2")
        standin.servicer.put_entry(_entry(3))
        standin.servicer.forget_removals()
        await manager.sync_once()

        # then the server answered `full` and the agent replaced its set
        assert set(state.snapshot.entries) == {"e1", "e3"}
        assert set(state.snapshot.svids) == {"e1", "e3"}

    run(scenario, tmp_path)


async def _next_ids(call: grpc.aio.UnaryStreamCall) -> set[str]:  # type: ignore[type-arg]
    message = await call.read()
    assert message is not grpc.aio.EOF
    return {s.spiffe_id for s in message.svids}


def test_a_change_at_the_server_reaches_an_open_workload_stream_by_push(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc

        # given a running agent that would not poll for minutes, and a workload (uid 0) stream
        standin.servicer.put_entry(StandinEntry("e0", "spiffe://example.org/first", ["unix:uid:0"]))
        state = AgentState()
        config = config_for(standin, tmp, sync_interval=300, resync_interval=300)
        manager = AgentManager(config, state)
        server = WorkloadApiServer(state, socket_path=str(tmp / "wl.sock"), svid_wait=20)
        await server.start()
        agent = asyncio.ensure_future(manager.run())
        channel = grpc.aio.insecure_channel("unix:" + str(tmp / "wl.sock"))
        try:
            stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)
            call = stub.FetchX509SVID(workloadapi_pb2.X509SVIDRequest(), metadata=HEADER)
            assert await _next_ids(call) == {"spiffe://example.org/first"}
            while standin.servicer.calls.watches == 0:
                await asyncio.sleep(0.01)

            # when entries for this workload are registered at the server, one at a time
            latencies = []
            expected = {"spiffe://example.org/first"}
            for n in range(20):
                spiffe_id = f"spiffe://example.org/pushed-{n}"
                started = time.perf_counter()
                standin.servicer.put_entry(StandinEntry(f"p{n}", spiffe_id, ["unix:uid:0"]))
                expected.add(spiffe_id)

                # then the open stream gets a complete message with it, pushed, not polled
                while await _next_ids(call) != expected:
                    pass
                latencies.append(time.perf_counter() - started)
            call.cancel()
        finally:
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
            await channel.close()
            await server.stop()
        ms = sorted(x * 1000 for x in latencies)
        print(
            f"\nregistration -> open FetchX509SVID stream (stand-in, {len(ms)} runs): "
            f"p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms"
        )
        # no safety-net resync ran: only the first round asked from revision 0
        assert [since for since, _ in standin.servicer.calls.syncs].count(0) == 1

    run(scenario, tmp_path)


def _foreign_bundle(name: str) -> Bundle:
    signer = LocalSigner.generate()
    now = utcnow()
    import datetime as dt

    ca = build_signing_certificate(
        trust_domain=TrustDomain(name),
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )
    return Bundle(TrustDomain(name), (ca,))


def test_federated_bundles_reach_the_agent_by_push(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given an entry federating with partner.org and a running agent
        standin.servicer.put_entry(_entry(1, federates_with=["partner.org"]))
        state = AgentState()
        config = config_for(standin, tmp, sync_interval=300, resync_interval=300)
        manager = AgentManager(config, state)
        agent = asyncio.ensure_future(manager.run())
        try:
            while not state.snapshot.ready:
                await state.wait_for_change(state.snapshot.version, 1)
            assert state.snapshot.federated_bundles == {}

            # when the tenant sets partner.org's bundle (and an unrelated one)
            partner = _foreign_bundle("partner.org")
            standin.servicer.set_federated_bundle("other.org", _foreign_bundle("other.org"))
            standin.servicer.set_federated_bundle("partner.org", partner)

            # then the agent holds partner.org's bundle (only: no entry federates with other.org)
            deadline = asyncio.get_running_loop().time() + 20
            while "partner.org" not in state.snapshot.federated_bundles:
                assert asyncio.get_running_loop().time() < deadline
                await state.wait_for_change(state.snapshot.version, 1)
            held = state.snapshot.federated_bundles
            assert set(held) == {"partner.org"}
            assert held["partner.org"].x509_authorities == partner.x509_authorities
        finally:
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)

    run(scenario, tmp_path)


def test_jwt_svid_is_reused_until_half_life_then_renewed(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given an entry whose JWT-SVIDs live 4 s
        standin.servicer.put_entry(_entry(1, jwt_svid_ttl=4))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp), state)
        await manager.bootstrap()
        await manager.sync_once()
        entry = state.snapshot.entries["e1"]

        # when a token is asked for twice at once, and again for the same audience set
        first, twin = await asyncio.gather(
            manager.jwt_cache.fetch(entry, ["b", "a"]), manager.jwt_cache.fetch(entry, ["a", "b"])
        )
        again = await manager.jwt_cache.fetch(entry, ["a", "b", "a"])

        # then one token was minted and reused
        assert first.token == twin.token == again.token
        assert standin.servicer.calls.jwt_mints == [("e1", ("a", "b"))]

        # when half its life (2 s after iat) has passed
        await asyncio.sleep(max(first.renew_at - time.time(), 0) + 0.2)
        renewed = await manager.jwt_cache.fetch(entry, ["a", "b"])

        # then a new token is minted
        assert renewed.token != first.token
        assert len(standin.servicer.calls.jwt_mints) == 2

    run(scenario, tmp_path)


def test_jwt_svids_of_removed_entries_are_evicted(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        standin.servicer.put_entry(_entry(1))
        standin.servicer.put_entry(_entry(2))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp), state)
        await manager.bootstrap()
        await manager.sync_once()
        for entry_id in ("e1", "e2"):
            await manager.jwt_cache.fetch(state.snapshot.entries[entry_id], ["api"])
        assert len(manager.jwt_cache) == 2

        # when e2 is removed and the agent syncs
        standin.servicer.remove_entry("e2")
        await manager.sync_once()

        # then only e1's token is left
        assert len(manager.jwt_cache) == 1

    run(scenario, tmp_path)
