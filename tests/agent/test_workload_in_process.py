"""The Workload API server over agent states the stand-in runner cannot stage.

The server runs in this process on an event loop of its own, over an AgentState the test
sets up, and is reached over its real Unix socket (the relay reads this process's real
credentials). Two states: an agent that holds its trust bundle but has not synced entries
yet (every call must tell the caller to retry, never answer from a half state or fail with
UNKNOWN), and a server configured with its own executable-hash limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from agent.state import AgentState, Entry
from agent.workload.server import WorkloadApiServer
from hallmark.bundle import Bundle, JwtAuthority
from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc
from hallmark.selectors import parse_selectors
from hallmark.signing import LocalSigner
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import build_signing_certificate, utcnow

HEADER = (("workload.spiffe.io", "true"),)
TRUST_DOMAIN = TrustDomain("example.org")


def _bundle() -> Bundle:
    signer = LocalSigner.generate()
    now = utcnow()
    ca = build_signing_certificate(
        trust_domain=TRUST_DOMAIN,
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )
    jwt = JwtAuthority("example.org-jwt-1", LocalSigner.generate().public_key())
    return Bundle(TRUST_DOMAIN, (ca,), (jwt,))


class InProcessServer:
    """A WorkloadApiServer on a private event loop thread."""

    def __init__(self, tmp_path: Path, **options: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.state = AgentState()
        self.socket_path = str(tmp_path / "api.sock")
        self.server = WorkloadApiServer(self.state, socket_path=self.socket_path, **options)

    @property
    def endpoint(self) -> str:
        return "unix:" + self.socket_path

    def run(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=20)  # type: ignore[arg-type]

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def unsynced_endpoint(tmp_path: Path) -> Iterator[str]:
    server = InProcessServer(tmp_path, svid_wait=0.3)

    async def start() -> None:
        snapshot = await server.state.publish(bundle=_bundle(), ready=False)
        assert snapshot.bundle is not None and not snapshot.ready
        await server.server.start()

    server.run(start())
    try:
        yield server.endpoint
    finally:
        server.close()


def _first_answer(endpoint: str, rpc: str, request: object) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(endpoint) as channel:
        stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        try:
            answer = getattr(stub, rpc)(request, metadata=HEADER, timeout=20)
            if rpc.startswith("FetchX509") or rpc == "FetchJWTBundles":
                next(iter(answer))
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(
    ("rpc", "request_message", "details"),
    [
        ("FetchJWTBundles", workloadapi_pb2.JWTBundlesRequest(), "agent_not_ready"),
        ("FetchX509Bundles", workloadapi_pb2.X509BundlesRequest(), "agent_not_ready"),
        ("FetchX509SVID", workloadapi_pb2.X509SVIDRequest(), "x509_svid_pending"),
        (
            "FetchJWTSVID",
            workloadapi_pb2.JWTSVIDRequest(audience=["reports"]),
            "agent_not_ready",
        ),
        (
            "ValidateJWTSVID",
            workloadapi_pb2.ValidateJWTSVIDRequest(audience="reports", svid="a.b.c"),
            "agent_not_ready",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_an_agent_with_a_bundle_but_no_sync_yet_tells_callers_to_retry(
    unsynced_endpoint: str, rpc: str, request_message: object, details: str
) -> None:
    code, text = _first_answer(unsynced_endpoint, rpc, request_message)

    assert code == grpc.StatusCode.UNAVAILABLE, (code, text)
    assert text.startswith(details), text


def _own_executable_sha256() -> str:
    with open(f"/proc/{os.getpid()}/exe", "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_the_servers_executable_hash_limit_is_the_one_attestation_uses(tmp_path: Path) -> None:
    # given an entry for this process by uid and executable hash, on a server that hashes
    # no executable larger than 1 byte
    entry = Entry(
        id="by-hash",
        spiffe_id=SpiffeId.parse("spiffe://example.org/by-hash"),
        parent_id="spiffe://example.org/spire/agent/test",
        selectors=parse_selectors(
            [f"unix:uid:{os.geteuid()}", f"unix:sha256:{_own_executable_sha256()}"]
        ),
    )
    server = InProcessServer(tmp_path, svid_wait=0.3, max_exe_hash_bytes=1)

    async def start() -> None:
        await server.state.publish(bundle=_bundle(), entries={entry.id: entry}, ready=True)
        await server.server.start()

    server.run(start())
    try:
        # when this process asks for its JWT-SVID
        code, text = _first_answer(
            server.endpoint, "FetchJWTSVID", workloadapi_pb2.JWTSVIDRequest(audience=["a"])
        )
    finally:
        server.close()

    # then no sha256 selector was claimed, so the entry does not match this process
    assert (code, text) == (grpc.StatusCode.PERMISSION_DENIED, "no identity issued")


def test_a_server_without_a_jwt_minter_tells_callers_to_retry(tmp_path: Path) -> None:
    # given a ready agent with an entry for this process but nothing to mint JWT-SVIDs with
    entry = Entry(
        id="by-uid",
        spiffe_id=SpiffeId.parse("spiffe://example.org/by-uid"),
        parent_id="spiffe://example.org/spire/agent/test",
        selectors=parse_selectors([f"unix:uid:{os.geteuid()}"]),
    )
    server = InProcessServer(tmp_path, svid_wait=0.3)

    async def start() -> None:
        await server.state.publish(bundle=_bundle(), entries={entry.id: entry}, ready=True)
        await server.server.start()

    server.run(start())
    try:
        code, text = _first_answer(
            server.endpoint, "FetchJWTSVID", workloadapi_pb2.JWTSVIDRequest(audience=["a"])
        )
    finally:
        server.close()

    # then the call says retry rather than failing on a missing minter
    assert (code, text) == (grpc.StatusCode.UNAVAILABLE, "jwt_svids_unavailable: retry")


def test_a_federated_bundle_named_like_the_agents_own_trust_domain_never_replaces_it(
    tmp_path: Path,
) -> None:
    # given an agent of example.org that also holds a "federated" bundle under the name
    # example.org (an impostor's keys), and an entry for this process federating with it
    own, impostor = _bundle(), _bundle()
    entry = Entry(
        id="self-federating",
        spiffe_id=SpiffeId.parse("spiffe://example.org/w"),
        parent_id="spiffe://example.org/spire/agent/test",
        selectors=parse_selectors([f"unix:uid:{os.geteuid()}"]),
        federates_with=("example.org",),
    )
    server = InProcessServer(tmp_path, svid_wait=0.3)

    async def start() -> None:
        await server.state.publish(
            bundle=own,
            entries={entry.id: entry},
            federated_bundles={"example.org": impostor},
            ready=True,
        )
        await server.server.start()

    server.run(start())
    try:
        # when this process fetches its X.509 bundles
        with grpc.insecure_channel(server.endpoint) as channel:
            stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)
            stream = stub.FetchX509Bundles(
                workloadapi_pb2.X509BundlesRequest(), metadata=HEADER, timeout=20
            )
            bundles = dict(next(iter(stream)).bundles)
            stream.cancel()
    finally:
        server.close()

    # then example.org's bundle is the agent's own, not the impostor's
    own_ca = own.x509_authorities[0].public_bytes(serialization.Encoding.DER)
    assert bundles["spiffe://example.org"] == own_ca


def test_the_server_hashes_a_callers_executable_once_across_calls_and_connections(
    tmp_path: Path,
) -> None:
    # given an entry for this process by uid and executable hash that federates with
    # other.org, so a caller it matches gets other.org's bundle
    entry = Entry(
        id="by-hash",
        spiffe_id=SpiffeId.parse("spiffe://example.org/by-hash"),
        parent_id="spiffe://example.org/spire/agent/test",
        selectors=parse_selectors(
            [f"unix:uid:{os.geteuid()}", f"unix:sha256:{_own_executable_sha256()}"]
        ),
        federates_with=("other.org",),
    )
    other = Bundle(TrustDomain("other.org"), _bundle().x509_authorities, ())
    server = InProcessServer(tmp_path, svid_wait=0.3)

    async def start() -> None:
        await server.state.publish(
            bundle=_bundle(),
            entries={entry.id: entry},
            federated_bundles={"other.org": other},
            ready=True,
        )
        await server.server.start()

    server.run(start())
    try:
        # when this process fetches its bundles five times, over three connections
        answers = []
        for calls in (1, 2, 2):
            with grpc.insecure_channel(server.endpoint) as channel:
                stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)
                for _ in range(calls):
                    stream = stub.FetchX509Bundles(
                        workloadapi_pb2.X509BundlesRequest(), metadata=HEADER, timeout=20
                    )
                    answers.append(set(next(iter(stream)).bundles))
                    stream.cancel()
    finally:
        server.close()

    # then every call matched by the executable's hash, and the file was hashed once
    assert answers == [{"spiffe://example.org", "spiffe://other.org"}] * 5
    assert server.server.exe_hashes.computed == 1
