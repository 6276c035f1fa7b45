"""A real agent API server (TLS relay + grpc.aio) in a thread, and a plain grpc client for it."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestors.node import join_token
from hallmark.protos import agent_pb2, agent_pb2_grpc
from hallmark.x509svid import make_csr
from issuance.agentapi import tlsbuild
from issuance.agentapi.server import AgentApiServer
from tests.hallmark.relay_helpers import client_context

TIMEOUT = 30.0
# The agent API builds a tenant's TLS credentials in the background and fails handshakes
# until they exist (its SNI callback never waits): first connections wait until it serves.
READY_TIMEOUT = 20.0
RETRY_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@contextlib.contextmanager
def server_svid_builds(
    before: Callable[[uuid.UUID], object] | None = None,
) -> Iterator[list[uuid.UUID]]:
    """While the block runs, every server SVID build (`tlsbuild.issue`: the agent API's and
    the bundle endpoint's) is recorded by its tenant, then runs `before` (a hang, a failure),
    then builds for real."""
    built: list[uuid.UUID] = []
    original = tlsbuild.issue

    def issue(tenant_id: uuid.UUID, *args: Any) -> Any:
        built.append(tenant_id)
        if before is not None:
            before(tenant_id)
        return original(tenant_id, *args)

    tlsbuild.issue = issue  # type: ignore[assignment]
    try:
        yield built
    finally:
        tlsbuild.issue = original  # type: ignore[assignment]


def wait_until_served(port: int, server_name: str, timeout: float = READY_TIMEOUT) -> bool:
    """Whether a TLS handshake with SNI `server_name` succeeds within `timeout` (retried)."""
    context = client_context()  # verifies nothing: this only waits for the SNI route
    context.set_alpn_protocols(["h2"])
    deadline = time.monotonic() + timeout
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
                context.wrap_socket(raw, server_hostname=server_name),
            ):
                return True
        except (ssl.SSLError, ConnectionError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


class ServerThread:
    """Runs AgentApiServer on 127.0.0.1:0 in its own event loop thread."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hallmark-agentapi-test-")
        self.server = AgentApiServer(self._dir.name)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop)
        self.port = future.result(timeout=TIMEOUT)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=TIMEOUT)
        self._dir.cleanup()


@contextlib.contextmanager
def running_server() -> Iterator[ServerThread]:
    thread = ServerThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@dataclass
class AgentIdentity:
    """An agent's key and, after attestation, its SVID chain."""

    key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate]
    spiffe_id: str

    @classmethod
    def fresh(cls) -> AgentIdentity:
        return cls(key=ec.generate_private_key(ec.SECP256R1()), chain=[], spiffe_id="")


def attest_call(
    stub: Any,
    request: Any,
    *,
    metadata: Any,
    timeout: float = TIMEOUT,
    respond: Callable[[bytes], bytes] | None = None,
) -> Any:
    """One AttestAgent conversation over the stream: the request, then `respond(challenge)`
    for each challenge the server asks; returns the final answer (RpcError on a refusal)."""
    requests: queue.Queue[Any] = queue.Queue()
    requests.put(request)

    def outgoing() -> Iterator[Any]:
        while (item := requests.get()) is not None:
            yield item

    try:
        for response in stub.AttestAgent(outgoing(), metadata=metadata, timeout=timeout):
            if not response.challenge:
                return response
            if respond is None:
                requests.put(None)  # no answer: the server must refuse the attestation
                continue
            requests.put(
                agent_pb2.AttestAgentRequest(challenge_response=respond(bytes(response.challenge)))
            )
    finally:
        requests.put(None)
    raise AssertionError("the attestation stream ended without an answer or an error")


class AgentApiClient:
    """One TLS (or mTLS) connection to the agent API, as an agent of `trust_domain` makes it.

    `server_name` is the SNI / TLS target name (the trust domain being talked to); `metadata_td`
    is what goes into the `x-hallmark-trust-domain` metadata (normally the same).
    """

    def __init__(
        self,
        port: int,
        *,
        server_name: str,
        roots_pem: bytes,
        identity: AgentIdentity | None = None,
        metadata_td: str | None = None,
        wait_ready: bool = True,
    ) -> None:
        key = chain = None
        if identity is not None and identity.chain:
            chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in identity.chain)
            key = identity.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        credentials = grpc.ssl_channel_credentials(
            root_certificates=roots_pem, private_key=key, certificate_chain=chain
        )
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{port}",
            credentials,
            options=[
                ("grpc.ssl_target_name_override", server_name),
                ("grpc.default_authority", server_name),
                # One TCP connection per client, as separate agents have (gRPC would otherwise
                # share a connection between channels that look alike).
                ("grpc.use_local_subchannel_pool", 1),
                *RETRY_OPTIONS,
            ],
        )
        if wait_ready:
            # A channel the server must refuse (a foreign or revoked SVID) would only time out
            # here: callers expecting a refusal pass wait_ready=False after wait_until_served.
            with contextlib.suppress(grpc.FutureTimeoutError):
                grpc.channel_ready_future(self.channel).result(timeout=READY_TIMEOUT)
        self.stub = agent_pb2_grpc.AgentAPIStub(self.channel)
        self.metadata = (("x-hallmark-trust-domain", metadata_td or server_name),)

    def close(self) -> None:
        self.channel.close()

    def attest(self, trust_domain: str, token: str, identity: AgentIdentity) -> Any:
        response = attest_call(
            self.stub,
            agent_pb2.AttestAgentRequest(
                trust_domain=trust_domain,
                attestation_type="join_token",
                attestation_data=join_token.attestation_data(token),
                csr=make_csr(identity.key),
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        identity.chain = [x509.load_der_x509_certificate(d) for d in response.svid_chain]
        identity.spiffe_id = response.spiffe_id
        return response

    def attest_with(self, trust_domain: str, attestor: Any, identity: AgentIdentity) -> Any:
        """Attest with a node attestor's agent half (answers its challenges)."""
        response = attest_call(
            self.stub,
            agent_pb2.AttestAgentRequest(
                trust_domain=trust_domain,
                attestation_type=attestor.type,
                attestation_data=attestor.payload(),
                csr=make_csr(identity.key),
            ),
            metadata=self.metadata,
            respond=attestor.respond,
        )
        identity.chain = [x509.load_der_x509_certificate(d) for d in response.svid_chain]
        identity.spiffe_id = response.spiffe_id
        return response

    def sync(self, since_revision: int = 0, page_size: int = 0) -> Any:
        return self.stub.SyncAuthorizedEntries(
            agent_pb2.SyncAuthorizedEntriesRequest(
                since_revision=since_revision, page_size=page_size
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )

    def new_jwt_svid(self, entry_id: str, audience: list[str]) -> Any:
        return self.stub.NewJWTSVID(
            agent_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=audience),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )

    def watch(self, timeout: float = TIMEOUT) -> Any:
        """The WatchUpdates stream: iterate it for notices, `.cancel()` it when done."""
        return self.stub.WatchUpdates(
            agent_pb2.WatchUpdatesRequest(), metadata=self.metadata, timeout=timeout
        )

    def fetch_bundle(self) -> Any:
        return self.stub.FetchBundle(
            agent_pb2.FetchBundleRequest(), metadata=self.metadata, timeout=TIMEOUT
        )

    def renew(self, key: ec.EllipticCurvePrivateKey) -> Any:
        return self.stub.RenewAgent(
            agent_pb2.RenewAgentRequest(csr=make_csr(key)), metadata=self.metadata, timeout=TIMEOUT
        )

    def new_svids(self, csrs: dict[str, bytes]) -> Any:
        return self.stub.BatchNewX509SVID(
            agent_pb2.BatchNewX509SVIDRequest(
                params=[agent_pb2.NewX509SVIDParams(entry_id=k, csr=v) for k, v in csrs.items()]
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
