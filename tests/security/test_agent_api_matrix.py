"""Agent API attack matrix, generated from the AgentAPI service descriptor: every RPC.

Each RPC is called as an attacker would: with tenant A's agent SVID at tenant B's name (SNI
B, client certificate of A), with SNI/metadata/request trust domains that disagree, as a
banned agent, as an evicted agent, with an SVID of a revoked authority, with another tenant's
SVID under a root both tenants share, and with another tenant's join token or entry ids.
Each is refused with the status the boundary promises, and nothing of B's comes back; B's
schema is read back afterwards. A legitimate call of each RPC proves the harness works, so a
refusal is the check's doing. An RPC this file does not know fails
`test_every_rpc_is_classified`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from attestors.node import join_token
from hallmark.protos import agent_pb2
from hallmark.x509svid import make_csr
from issuance.models import JoinToken
from tests.conftest import TenantHandle, make_tenant
from tests.crosstenant import tenant_rows
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import (
    TIMEOUT,
    AgentApiClient,
    AgentIdentity,
    ServerThread,
    running_server,
    wait_until_served,
)
from tests.issuance.conftest import bundle_pem, create_entry, create_join_token
from tests.issuance.test_agent_api_taint import rotate, taint
from tests.security.conftest import discard_tenant, two_tenants

# Each test runs in a rolled-back transaction; what the server's threads must see (tenants,
# agents, join tokens) is made once a module, committed, by the `world` fixture.
pytestmark = pytest.mark.django_db
SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentAPI"]
RPCS = [method.name for method in SERVICE.methods]
# The proto's contract: AttestAgent is the only call made without a client certificate.
UNAUTHENTICATED_RPCS = {"AttestAgent"}


# -- the world -----------------------------------------------------------------------------------
@dataclass
class AttestedAgent:
    handle: TenantHandle
    identity: AgentIdentity
    entry_id: str  # an entry this agent is authorised for


@dataclass
class World:
    server: ServerThread
    a: TenantHandle
    b: TenantHandle
    agent_a: AttestedAgent
    agent_b: AttestedAgent
    banned: AttestedAgent
    evicted: AttestedAgent
    revoked: AttestedAgent  # its SVID was signed by an authority that is revoked now
    shared_a: AttestedAgent  # tenants A2 and B2 chain to one upstream root
    shared_b: TenantHandle
    b_join_token: dict[str, Any]
    b_federation: str  # a trust domain only B federates with (B holds its bundle)
    a_join_tokens: list[dict[str, Any]]  # committed, unspent: one for each attestation here


def _agent(server: ServerThread, handle: TenantHandle, path: str) -> AttestedAgent:
    identity, _, client = attested(server, handle)
    client.close()
    entry = create_entry(handle, path, parent_id=identity.spiffe_id)
    return AttestedAgent(handle, identity, entry["id"])


def _revoke_authority_of(handle: TenantHandle, server: ServerThread) -> AttestedAgent:
    """An agent of `handle`, then its X.509 authority rotated out, tainted and revoked."""
    agent = _agent(server, handle, "/before-revocation")
    old = rotate(handle, "x509")
    taint(handle, "x509", old)
    revoked = handle.client.post(f"/api/v1/trust-domain/x509-authorities/{old}/revoke")
    assert revoked.status_code == 200, revoked.content
    # wait (bounded) until the server serves the new authority to a freshly attested agent
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            fresh = _agent(server, handle, f"/after-revocation-{time.monotonic_ns()}")
            call(
                server, fresh.handle, fresh.identity, "FetchBundle", agent_pb2.FetchBundleRequest()
            )
            break
        except (grpc.RpcError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return agent


def _federation_of_b_only(
    a: TenantHandle,
    b: TenantHandle,
    peer: TenantHandle,
    agent_a: AttestedAgent,
    agent_b: AttestedAgent,
) -> str:
    """B federates with a peer; both agents have an entry that names the peer."""
    name = f"b-peer-{time.monotonic_ns()}.test"
    relationship = b.client.post(
        "/api/v1/federation-relationships",
        {"trust_domain": name, "trust_domain_bundle": peer.client.get("/api/v1/bundle").json()},
        format="json",
    )
    assert relationship.status_code == 201, relationship.content
    for handle, agent in ((a, agent_a), (b, agent_b)):
        create_entry(
            handle, "/federating", parent_id=agent.identity.spiffe_id, federates_with=[name]
        )
    return name


@pytest.fixture(scope="module")
def world(module_db: None) -> Iterator[World]:
    with running_server() as server, two_tenants() as (a, b):
        shared = [make_tenant("sa", upstream_authority="embedded")]
        try:
            shared.append(make_tenant("sb", upstream_authority="embedded"))
            revoking = make_tenant("rv")
            shared.append(revoking)
            agent_a = _agent(server, a, "/a-workload")
            agent_b = _agent(server, b, "/b-workload")
            banned = _agent(server, a, "/banned-workload")
            evicted = _agent(server, a, "/evicted-workload")
            for agent, method, suffix in ((banned, "post", "/ban"), (evicted, "delete", "")):
                [row] = [
                    r
                    for r in a.client.get("/api/v1/agents").json()
                    if r["spiffe_id"] == agent.identity.spiffe_id
                ]
                answer = getattr(a.client, method)(f"/api/v1/agents/{row['id']}{suffix}")
                assert answer.status_code in (200, 204), answer.content
            yield World(
                server=server,
                a=a,
                b=b,
                agent_a=agent_a,
                agent_b=agent_b,
                banned=banned,
                evicted=evicted,
                revoked=_revoke_authority_of(revoking, server),
                shared_a=_agent(server, shared[0], "/shared-a"),
                shared_b=shared[1],
                b_join_token=create_join_token(b),
                b_federation=_federation_of_b_only(a, b, shared[1], agent_a, agent_b),
                a_join_tokens=[create_join_token(a) for _ in range(len(ATTEST_ATTACKS) + 1)],
            )
        finally:
            for handle in shared:
                discard_tenant(handle)


# -- calling any RPC -----------------------------------------------------------------------------
def call(
    server: ServerThread,
    target: TenantHandle,
    identity: AgentIdentity | None,
    rpc: str,
    request: Any,
    *,
    metadata_td: str | None = None,
    metadata: bool = True,
) -> Any:
    """One call of `rpc` on a new connection with SNI = `target`'s trust domain.

    A server stream answers its first message. Raises grpc.RpcError as the call does.
    """
    # Wait until the server serves the name, not until this channel is ready: a channel the
    # server refuses at the handshake (the attack cases) would only time out.
    wait_until_served(server.port, target.trust_domain)
    client = AgentApiClient(
        server.port,
        server_name=target.trust_domain,
        roots_pem=bundle_pem(target),
        identity=identity,
        metadata_td=metadata_td,
        wait_ready=False,
    )
    try:
        method = getattr(client.stub, rpc)
        options = {"metadata": client.metadata if metadata else (), "timeout": TIMEOUT}
        descriptor = SERVICE.methods_by_name[rpc]
        answer = method(iter([request]) if descriptor.client_streaming else request, **options)
        if descriptor.server_streaming:
            try:
                return next(answer)
            finally:
                answer.cancel()
        return answer
    finally:
        client.close()


# Each RPC's request as its legitimate caller (the agent `agent`, talking to `td`) sends it.
def _attest(world: World, agent: AttestedAgent, td: str, token: str | None = None) -> Any:
    return agent_pb2.AttestAgentRequest(
        trust_domain=td,
        attestation_type="join_token",
        attestation_data=join_token.attestation_data(token or world.a_join_tokens.pop()["token"]),
        csr=make_csr(ec.generate_private_key(ec.SECP256R1())),
    )


REQUESTS: dict[str, Callable[[World, AttestedAgent, str], Any]] = {
    "AttestAgent": _attest,
    "RenewAgent": lambda w, agent, td: agent_pb2.RenewAgentRequest(
        csr=make_csr(ec.generate_private_key(ec.SECP256R1()))
    ),
    "FetchBundle": lambda w, agent, td: agent_pb2.FetchBundleRequest(),
    "SyncAuthorizedEntries": lambda w, agent, td: agent_pb2.SyncAuthorizedEntriesRequest(),
    "BatchNewX509SVID": lambda w, agent, td: agent_pb2.BatchNewX509SVIDRequest(
        params=[
            agent_pb2.NewX509SVIDParams(
                entry_id=agent.entry_id, csr=make_csr(ec.generate_private_key(ec.SECP256R1()))
            )
        ]
    ),
    "NewJWTSVID": lambda w, agent, td: agent_pb2.NewJWTSVIDRequest(
        entry_id=agent.entry_id, audience=["matrix"]
    ),
    "WatchUpdates": lambda w, agent, td: agent_pb2.WatchUpdatesRequest(),
}


def test_every_rpc_is_classified() -> None:
    unknown = [rpc for rpc in RPCS if rpc not in REQUESTS]
    assert not unknown, (
        f"AgentAPI RPCs {unknown} have no request builder: add them to REQUESTS in {__file__} "
        "(and to UNAUTHENTICATED_RPCS if they are called without an agent SVID)"
    )


def _markers(world: World) -> list[bytes]:
    """Things of B's that must never reach A: entry and agent IDs, B's CA certificates."""
    b = world.b
    markers = [world.agent_b.entry_id.encode(), world.agent_b.identity.spiffe_id.encode()]
    markers += [f"spiffe://{b.trust_domain}/b-workload".encode()]
    with b.schema():
        from trustdomains.models import X509Authority

        markers += [bytes(a.certificate_der) for a in X509Authority.objects.all()]
    return markers


def _assert_nothing_of_b(world: World, answer: Any, *, sent: bytes = b"") -> None:
    """No marker of B's in the answer (but what A itself sent may be echoed back)."""
    if isinstance(answer, grpc.RpcError):
        text = (answer.details() or "").encode()
    else:
        text = answer.SerializeToString()
    leaked = [m[:60] for m in _markers(world) if m in text and m != sent]
    assert not leaked, f"the answer carries B's {leaked}"


# -- the legitimate calls -------------------------------------------------------------------------
@pytest.mark.parametrize("rpc", RPCS)
def test_own_agent_call_succeeds(world: World, rpc: str) -> None:
    agent = world.agent_a
    identity = None if rpc in UNAUTHENTICATED_RPCS else agent.identity
    answer = call(
        world.server, world.a, identity, rpc, REQUESTS[rpc](world, agent, world.a.trust_domain)
    )
    _assert_nothing_of_b(world, answer)


# -- the attacks on SVID-authenticated RPCs ---------------------------------------------------
@dataclass(frozen=True)
class Attack:
    """How the call is made, and the refusal it must meet."""

    codes: tuple[grpc.StatusCode, ...]
    detail_prefix: str  # "" where the refusal is the TLS handshake (no gRPC detail of ours)
    make: Callable[[World, str], dict[str, Any]]  # -> call() arguments, for an RPC
    victim: Callable[[World], TenantHandle]


def _as(
    agent_of: Callable[[World], AttestedAgent],
    target: Callable[[World], TenantHandle],
    **extra: Any,
):
    def make(world: World, rpc: str) -> dict[str, Any]:
        agent = agent_of(world)
        sni = target(world)
        return {
            "target": sni,
            "identity": agent.identity,
            "request": REQUESTS[rpc](world, agent, sni.trust_domain),
            **{k: (v(world) if callable(v) else v) for k, v in extra.items()},
        }

    return make


ATTACKS: dict[str, Attack] = {
    # B's name, A's certificate: B's TLS context trusts only B's authorities
    "sni-b-with-svid-of-a": Attack(
        (grpc.StatusCode.UNAVAILABLE,), "", _as(lambda w: w.agent_a, lambda w: w.b), lambda w: w.b
    ),
    # under one shared upstream root the handshake passes; the SVID check must still refuse
    "sni-b-with-svid-of-a-under-a-shared-root": Attack(
        (grpc.StatusCode.UNAUTHENTICATED,),
        "invalid_agent_svid:",
        _as(lambda w: w.shared_a, lambda w: w.shared_b),
        lambda w: w.shared_b,
    ),
    "metadata-names-b": Attack(
        (grpc.StatusCode.INVALID_ARGUMENT,),
        "trust_domain_mismatch:",
        _as(lambda w: w.agent_a, lambda w: w.a, metadata_td=lambda w: w.b.trust_domain),
        lambda w: w.b,
    ),
    "metadata-missing": Attack(
        (grpc.StatusCode.INVALID_ARGUMENT,),
        "trust_domain_mismatch:",
        _as(lambda w: w.agent_a, lambda w: w.a, metadata=False),
        lambda w: w.b,
    ),
    "banned-agent": Attack(
        (grpc.StatusCode.PERMISSION_DENIED,),
        "agent_banned:",
        _as(lambda w: w.banned, lambda w: w.a),
        lambda w: w.b,
    ),
    "evicted-agent": Attack(
        (grpc.StatusCode.PERMISSION_DENIED,),
        "agent_not_attested:",
        _as(lambda w: w.evicted, lambda w: w.a),
        lambda w: w.b,
    ),
    # Revoked authorities leave the bundle: the TLS context (refreshed in the background)
    # refuses the handshake, or, while it still has the old roots, the SVID check refuses.
    "svid-of-a-revoked-authority": Attack(
        (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED),
        "",
        _as(lambda w: w.revoked, lambda w: w.revoked.handle),
        lambda w: w.b,
    ),
    "no-client-certificate": Attack(
        (grpc.StatusCode.UNAUTHENTICATED,),
        "no_client_certificate:",
        _as(lambda w: w.agent_a, lambda w: w.a, identity=None),
        lambda w: w.b,
    ),
}


def _refused(world: World, attack: Attack, rpc: str, arguments: dict[str, Any]) -> None:
    victim = attack.victim(world)
    before = tenant_rows(victim)
    with pytest.raises(grpc.RpcError) as refusal:
        call(world.server, rpc=rpc, **arguments)
    error = refusal.value
    assert error.code() in attack.codes, f"{rpc}: {error.code()} {error.details()}"
    assert (error.details() or "").startswith(attack.detail_prefix), error.details()
    _assert_nothing_of_b(world, error)
    assert tenant_rows(victim) == before, f"{rpc} changed {victim.trust_domain}"


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("rpc", [r for r in RPCS if r not in UNAUTHENTICATED_RPCS])
def test_attack_on_authenticated_rpc_is_refused(world: World, rpc: str, attack: str) -> None:
    _refused(world, ATTACKS[attack], rpc, ATTACKS[attack].make(world, rpc))


# -- attacks through the request itself -------------------------------------------------------
def _token_unspent(handle: TenantHandle, token_id: str) -> bool:
    with handle.schema():
        return JoinToken.objects.get(pk=token_id).used_at is None


def test_join_token_of_b_does_not_attest_at_a(world: World) -> None:
    token = world.b_join_token
    _refused(
        world,
        Attack((grpc.StatusCode.PERMISSION_DENIED,), "", lambda w, r: {}, lambda w: w.b),
        "AttestAgent",
        {
            "target": world.a,
            "identity": None,
            "request": _attest(world, world.agent_a, world.a.trust_domain, token["token"]),
        },
    )
    assert _token_unspent(world.b, token["id"])


ATTEST_ATTACKS: dict[str, tuple[grpc.StatusCode, str, Callable[[World], dict[str, Any]]]] = {
    # A's valid token, but the request names B while SNI names A
    "request-names-b": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "trust_domain_mismatch:",
        lambda w: {"target": w.a, "identity": None},
    ),
    "metadata-names-b": (
        grpc.StatusCode.INVALID_ARGUMENT,
        "trust_domain_mismatch:",
        lambda w: {"target": w.a, "identity": None, "metadata_td": w.b.trust_domain},
    ),
    "sni-b-with-svid-of-a": (
        grpc.StatusCode.UNAVAILABLE,
        "",
        lambda w: {"target": w.b, "identity": w.agent_a.identity},
    ),
}


@pytest.mark.parametrize("attack", ATTEST_ATTACKS)
def test_attestation_across_trust_domains_is_refused(world: World, attack: str) -> None:
    code, prefix, arguments = ATTEST_ATTACKS[attack]
    token = world.a_join_tokens.pop()
    request = _attest(world, world.agent_a, world.b.trust_domain, token["token"])
    if attack == "metadata-names-b":
        request.trust_domain = world.a.trust_domain
    _refused(
        world,
        Attack((code,), prefix, lambda w, r: {}, lambda w: w.b),
        "AttestAgent",
        {**arguments(world), "request": request},
    )
    assert _token_unspent(world.a, token["id"]), "a refused attestation spent the token"


def _fields_named(descriptor: Any, name: str, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for field in descriptor.fields:
        if field.name == name:
            found.append((*path, field.name))
        elif field.message_type is not None:
            found += _fields_named(field.message_type, name, (*path, field.name))
    return found


ENTRY_ID_RPCS = [m.name for m in SERVICE.methods if _fields_named(m.input_type, "entry_id")]
# What naming another tenant's entry answers: a refusal, or a per-item error in a batch.
ENTRY_ID_REFUSALS = {
    "NewJWTSVID": grpc.StatusCode.PERMISSION_DENIED,
    "BatchNewX509SVID": "entry_not_authorized",
}


def test_every_rpc_taking_an_entry_id_is_listed() -> None:
    assert set(ENTRY_ID_RPCS) == set(ENTRY_ID_REFUSALS), (
        f"RPCs taking entry ids {ENTRY_ID_RPCS}: list their refusal in ENTRY_ID_REFUSALS"
    )


@pytest.mark.parametrize("rpc", ENTRY_ID_RPCS)
def test_entry_id_of_b_gets_nothing_from_a(world: World, rpc: str) -> None:
    theirs = AttestedAgent(world.a, world.agent_a.identity, world.agent_b.entry_id)
    request = REQUESTS[rpc](world, theirs, world.a.trust_domain)
    before = tenant_rows(world.b)
    expected = ENTRY_ID_REFUSALS[rpc]
    if isinstance(expected, grpc.StatusCode):
        with pytest.raises(grpc.RpcError) as refusal:
            call(world.server, world.a, world.agent_a.identity, rpc, request)
        assert refusal.value.code() == expected, refusal.value.details()
        _assert_nothing_of_b(world, refusal.value, sent=theirs.entry_id.encode())
    else:
        answer = call(world.server, world.a, world.agent_a.identity, rpc, request)
        assert [(r.error_code, len(r.svid_chain)) for r in answer.results] == [(expected, 0)]
        _assert_nothing_of_b(world, answer, sent=theirs.entry_id.encode())
    assert tenant_rows(world.b) == before


def test_federated_bundle_held_by_b_never_reaches_a_agent(world: World) -> None:
    # given B holds a peer's bundle and both tenants' agents have entries naming that peer
    peer = world.b_federation
    request = agent_pb2.FetchBundleRequest()

    # when each agent fetches its bundle
    theirs = call(world.server, world.b, world.agent_b.identity, "FetchBundle", request)
    ours = call(world.server, world.a, world.agent_a.identity, "FetchBundle", request)

    # then B's agent gets the peer's bundle (the mechanism works), A's agent does not
    assert peer in theirs.federated_bundles
    assert peer not in ours.federated_bundles
    assert theirs.federated_bundles[peer] not in ours.SerializeToString()
    _assert_nothing_of_b(world, ours)
