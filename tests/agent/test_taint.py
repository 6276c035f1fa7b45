"""Tainted authorities: the agent replaces everything they signed and pushes it to workloads.

The agent runs against the agent API stand-in, which rotates and taints authorities as the
control plane's forced operations do (a new CA signs; the old one stays published, tainted;
the bundle sequence moves and a notice is pushed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from agent.manager import AgentManager
from agent.state import AgentState
from agent.store import load_saved
from agent.taint import Taint, jwt_key_id
from agent.workload.server import WorkloadApiServer
from hallmark.bundle import load_der_certificates
from hallmark.signing import LocalSigner
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import LeafRequest, build_leaf, build_signing_certificate, utcnow
from tests.agent.agent_api_standin import AgentApiStandin, StandinEntry
from tests.agent.test_manager import config_for, run

HEADER = (("workload.spiffe.io", "true"),)
TD = TrustDomain("example.org")


def issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _entry(n: int, uid: int = 5000) -> StandinEntry:
    return StandinEntry(f"e{n}", f"spiffe://example.org/w{n}", [f"unix:uid:{uid + n}"])


def _ca(signer: LocalSigner) -> x509.Certificate:
    now = utcnow()
    return build_signing_certificate(
        trust_domain=TD,
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )


def test_taint_matches_svids_by_authority_key_identifier_not_by_issuer_name() -> None:
    # given two CAs of the same trust domain (same subject name) and a leaf from each
    old_signer, new_signer = LocalSigner.generate(), LocalSigner.generate()
    old_ca, new_ca = _ca(old_signer), _ca(new_signer)
    assert old_ca.subject == new_ca.subject
    key = LocalSigner.generate().public_key()
    request = LeafRequest(SpiffeId.parse("spiffe://example.org/w"), key, dt.timedelta(hours=1))
    old_leaf = build_leaf(request, ca=old_ca, signer=old_signer)
    new_leaf = build_leaf(request, ca=new_ca, signer=new_signer)

    # when the old CA is tainted
    taint = Taint.of([old_ca], [])

    # then only the old CA's leaf (and the CA itself) counts as tainted
    assert taint.signed([old_leaf])
    assert not taint.signed([new_leaf])
    assert taint.signed([new_leaf, old_ca])
    assert not Taint().signed([old_leaf])


def test_jwt_key_id_reads_the_protected_header() -> None:
    # given a compact JWS whose header names kid "k1" (and a malformed token)
    header = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0"  # {"alg":"ES256","kid":"k1"}
    # then the kid is read, and a malformed token has none
    assert jwt_key_id(f"{header}.e30.sig") == "k1"
    assert jwt_key_id("!!.e30.sig") == ""
    assert Taint.of([], ["k1"]).jwt_signed(f"{header}.e30.sig")


def test_taint_replaces_workload_svids_and_the_agent_svid_once(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given an agent holding SVIDs for two entries, and a CA rotation (no taint yet)
        standin.servicer.put_entry(_entry(1))
        standin.servicer.put_entry(_entry(2))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp, taint_jitter=0), state)
        await manager.bootstrap()
        await manager.sync_once()
        first = {k: v.svid.leaf.serial_number for k, v in state.snapshot.svids.items()}
        old_ca = standin.servicer.rotate_x509_authority()
        new_ca = standin.authority.ca
        await manager.sync_once()

        # then a plain rotation replaces nothing before half-life
        assert {k: v.svid.leaf.serial_number for k, v in state.snapshot.svids.items()} == first
        assert standin.servicer.calls.renew == 0

        # when the old CA is tainted and the agent syncs
        standin.servicer.taint_x509_authority(old_ca)
        await manager.sync_once()

        # then every workload SVID and the agent's own SVID are signed by the new CA
        assert manager.taint.x509_authorities == (old_ca,)
        for held in state.snapshot.svids.values():
            assert issued_by(held.svid.leaf, new_ca)
        assert standin.servicer.calls.renew == 1
        saved = load_saved(str(tmp / "data"), TD)
        assert saved is not None and issued_by(saved.svid.leaf, new_ca)
        # and the tainted CA is still in the bundle served to workloads (until revoked)
        assert state.snapshot.bundle is not None
        assert old_ca in state.snapshot.bundle.x509_authorities

        # when the agent syncs again
        batches = len(standin.servicer.calls.batches)
        await manager.sync_once()

        # then nothing is replaced twice
        assert standin.servicer.calls.renew == 1
        assert len(standin.servicer.calls.batches) == batches

    run(scenario, tmp_path)


def test_tainted_svid_is_served_until_its_replacement_arrives(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given an agent holding an SVID from a CA that is then rotated out and tainted
        standin.servicer.put_entry(_entry(1))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp, taint_jitter=0), state)
        await manager.bootstrap()
        await manager.sync_once()
        held = state.snapshot.svids["e1"].svid.leaf.serial_number
        old_ca = standin.servicer.rotate_x509_authority()
        standin.servicer.taint_x509_authority(old_ca)

        # when the server cannot sign the replacement
        standin.servicer.svid_error = "key_manager_unavailable"
        await manager.sync_once()

        # then the old SVID is still served
        assert state.snapshot.svids["e1"].svid.leaf.serial_number == held

        # when the server signs again
        standin.servicer.svid_error = ""
        await manager.sync_once()

        # then the replacement from the new CA is served
        assert issued_by(state.snapshot.svids["e1"].svid.leaf, standin.authority.ca)

    run(scenario, tmp_path)


def test_cached_jwt_svids_with_a_tainted_kid_are_dropped(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given a cached JWT-SVID signed with the first JWT key
        standin.servicer.put_entry(_entry(1))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp, taint_jitter=0), state)
        await manager.bootstrap()
        await manager.sync_once()
        entry = state.snapshot.entries["e1"]
        before = await manager.jwt_cache.fetch(entry, ["api"])
        assert len(manager.jwt_cache) == 1

        # when that key is rotated out and tainted, and the agent syncs
        tainted = standin.servicer.taint_jwt_key()
        assert jwt_key_id(before.token) == tainted
        await manager.sync_once()

        # then the token is dropped, and the next request mints one with the new key
        assert len(manager.jwt_cache) == 0
        after = await manager.jwt_cache.fetch(entry, ["api"])
        assert jwt_key_id(after.token) == standin.authority.jwt_key_id != tainted
        assert len(standin.servicer.calls.jwt_mints) == 2

    run(scenario, tmp_path)


def _published_cas(state: AgentState) -> int:
    bundle = state.snapshot.bundle
    return 0 if bundle is None else len(bundle.x509_authorities)


async def _next_chain(call: grpc.aio.UnaryStreamCall) -> list[x509.Certificate]:  # type: ignore[type-arg]
    message = await call.read()
    assert message is not grpc.aio.EOF
    return list(load_der_certificates(message.svids[0].x509_svid))


def test_an_open_workload_stream_receives_replacements_after_a_taint_notice(
    tmp_path: Path,
) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc

        # given a running agent that would not poll for minutes, and an open workload stream
        standin.servicer.put_entry(StandinEntry("e0", "spiffe://example.org/w", ["unix:uid:0"]))
        state = AgentState()
        config = config_for(standin, tmp, sync_interval=300, resync_interval=300, taint_jitter=0.5)
        manager = AgentManager(config, state)
        server = WorkloadApiServer(state, socket_path=str(tmp / "wl.sock"), svid_wait=20)
        await server.start()
        agent = asyncio.ensure_future(manager.run())
        channel = grpc.aio.insecure_channel("unix:" + str(tmp / "wl.sock"))
        try:
            stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)
            call = stub.FetchX509SVID(workloadapi_pb2.X509SVIDRequest(), metadata=HEADER)
            old_ca = standin.authority.ca
            assert issued_by((await _next_chain(call))[0], old_ca)
            while standin.servicer.calls.watches == 0:
                await asyncio.sleep(0.01)

            # when a new CA is activated (the stream then gets the new bundle, same SVID)
            standin.servicer.rotate_x509_authority()
            new_ca = standin.authority.ca
            while _published_cas(state) < 2:
                await state.wait_for_change(state.snapshot.version, 1)

            # and the old one is tainted
            started = time.perf_counter()
            standin.servicer.taint_x509_authority(old_ca)

            # then the open stream gets a complete message with an SVID from the new CA
            while not issued_by((leaf := (await _next_chain(call))[0]), new_ca):
                pass
            latency = time.perf_counter() - started
            assert not issued_by(leaf, old_ca)
            call.cancel()
        finally:
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
            await channel.close()
            await server.stop()
        print(f"\ntaint -> replacement on an open FetchX509SVID stream: {latency * 1000:.0f} ms")
        # pushed, not polled: the only resync from revision 0 was the first round
        assert [since for since, _ in standin.servicer.calls.syncs].count(0) == 1
        assert standin.servicer.calls.renew == 1

    run(scenario, tmp_path)
