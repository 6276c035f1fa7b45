"""Agent API client: the agent's gRPC calls to the control plane over (m)TLS.

The server must present `spiffe://<trust domain>/spire/server`, chaining to the trust
domain's X.509 authorities (and naming the trust domain as DNS SAN); once attested, the agent
SVID is the client certificate. grpcio cannot check a URI SAN, so the TLS runs in
agent.servertls's tunnel and the channel speaks to it over a private Unix socket.
`configure` rebuilds the channel when the roots or the SVID change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.jwtcache import MintedJwt
from agent.servertls import ServerTunnel, client_context
from agent.state import Entry, X509Svid
from agent.taint import Taint
from attestors.node import join_token
from attestors.node.base import AgentAttestor
from hallmark.bundle import Bundle
from hallmark.errors import HallmarkError
from hallmark.protos import agent_pb2, agent_pb2_grpc
from hallmark.selectors import parse_selectors
from hallmark.spiffeid import SpiffeId, TrustDomain

TRUST_DOMAIN_METADATA = "x-hallmark-trust-domain"
CALL_TIMEOUT = 30.0
DEFAULT_PAGE_SIZE = 1000
# Pings on long quiet streams (WatchUpdates) keep the agent API's relay from taking the
# connection for idle (hallmark.relay.RelayLimits.idle_timeout, 15 min by default); above
# the 5 minutes under which a gRPC server counts pings as abuse.
KEEPALIVE_MS = 6 * 60 * 1000
RECONNECT_BACKOFF_MAX_MS = 10_000
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SvidResult:
    """One BatchNewX509SVID result: a chain, or an error code and message."""

    entry_id: str
    chain: tuple[x509.Certificate, ...]
    error_code: str = ""
    error: str = ""


@dataclass(frozen=True)
class Attestation:
    """What AttestAgent answered: the agent's SPIFFE ID, SVID chain and the bundle."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]
    bundle: Bundle


@dataclass(frozen=True)
class BundleSet:
    """FetchBundle's answer: the trust domain's bundle and the federated ones by name."""

    bundle: Bundle
    federated: dict[str, Bundle] = field(default_factory=dict)
    # The trust domain's tainted authorities: what they signed must be replaced now.
    taint: Taint = field(default_factory=Taint)


@dataclass(frozen=True)
class SyncPage:
    """One SyncAuthorizedEntries answer (see agent.proto for the paging rules)."""

    entries: tuple[Entry, ...]
    removed_entry_ids: tuple[str, ...]
    revision: int
    more: bool
    full: bool
    agent_id: str = ""


@dataclass(frozen=True)
class UpdateNotice:
    """A WatchUpdates push: the tenant's latest entry revision and bundle sequence."""

    entries_revision: int
    bundle_sequence: int
    resync: bool


def _certificates(ders: Sequence[bytes]) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_der_x509_certificate(d) for d in ders)


def bundle_from_proto(trust_domain: TrustDomain, message: Any) -> Bundle:
    """Prefer the full SPIFFE bundle JSON; fall back to the DER X.509 authorities."""
    if message.spiffe_bundle:
        return Bundle.parse(trust_domain, bytes(message.spiffe_bundle))
    return Bundle(
        trust_domain,
        _certificates(list(message.x509_authorities)),
        sequence=int(message.sequence),
    )


def entry_from_proto(message: Any) -> Entry:
    return Entry(
        id=message.id,
        spiffe_id=SpiffeId.parse(message.spiffe_id),
        parent_id=message.parent_id,
        selectors=parse_selectors(message.selectors),
        x509_svid_ttl=int(message.x509_svid_ttl),
        hint=message.hint,
        dns_names=tuple(message.dns_names),
        revision=int(message.revision),
        jwt_svid_ttl=int(message.jwt_svid_ttl),
        federates_with=tuple(message.federates_with),
    )


def federated_from_proto(message: Any) -> dict[str, Bundle]:
    """The federated SPIFFE bundles by trust domain name; unreadable ones are left out."""
    bundles: dict[str, Bundle] = {}
    for name, document in message.federated_bundles.items():
        try:
            bundles[name] = Bundle.parse(TrustDomain(name), bytes(document))
        except HallmarkError as exc:
            _log.warning("ignoring the federated bundle of %s: %s", name, exc)
    return bundles


def taint_from_proto(message: Any) -> Taint:
    """The tainted X.509 authorities and JWT key ids; unreadable certificates are left out."""
    authorities = []
    for der in message.tainted_x509_authorities:
        try:
            authorities.append(x509.load_der_x509_certificate(bytes(der)))
        except ValueError as exc:
            _log.warning("ignoring an unreadable tainted authority: %s", exc)
    return Taint.of(authorities, message.tainted_jwt_key_ids)


class AgentClient:
    """The control plane's AgentAPI, as seen by one agent of one trust domain."""

    def __init__(
        self, target: str, trust_domain: TrustDomain, *, tunnel_dir: str | None = None
    ) -> None:
        self._target = target
        self.trust_domain = trust_domain
        self._channel: Any = None
        self._stub: Any = None
        self._material: tuple[bytes, bytes | None, bytes | None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._tunnel_dir = tunnel_dir
        self._own_tunnel_dir = False
        self.tunnel: ServerTunnel | None = None

    async def _ensure_tunnel(self) -> ServerTunnel:
        if self.tunnel is None:
            if self._tunnel_dir is None:
                self._tunnel_dir = tempfile.mkdtemp(prefix="hallmark-agentapi-")
                self._own_tunnel_dir = True
            host, _, port = self._target.rpartition(":")
            self.tunnel = ServerTunnel(
                host.strip("[]"), int(port), self.trust_domain, self._tunnel_dir
            )
        await self.tunnel.start()
        return self.tunnel

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((TRUST_DOMAIN_METADATA, self.trust_domain.name),)

    async def configure(self, bundle: Bundle, svid: X509Svid | None) -> None:
        """Use these roots (and client certificate); rebuild the channel only if they changed."""
        roots = bundle.x509_pem()
        chain = key = None
        if svid is not None:
            chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.chain)
            key = svid.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        material = (roots, chain, key)
        if material == self._material and self._channel is not None:
            return
        self._retire_channel()
        tunnel = await self._ensure_tunnel()
        tunnel.use(client_context(roots, chain, key, os.path.dirname(tunnel.path)))
        options = [
            ("grpc.default_authority", self.trust_domain.name),
            # A channel of its own connection: a new channel must open a new TLS connection
            # (with the new roots or SVID), not share the retiring channel's.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            # grpc's own reconnect back-off grows to 120 s by default: an agent would wait up
            # to two minutes after the plane is back. Cap it as the sync loop's (jittered by grpc).
            ("grpc.initial_reconnect_backoff_ms", 1000),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
        ]
        self._channel = grpc.aio.insecure_channel("unix:" + tunnel.path, options=options)
        self._stub = agent_pb2_grpc.AgentAPIStub(self._channel)  # type: ignore[no-untyped-call,unused-ignore]
        self._material = material

    def use_insecure_unix(self, path: str) -> None:
        """Plaintext to a local tunnel (insecure bootstrap only; see agent.trust)."""
        self._channel = grpc.aio.insecure_channel(
            "unix:" + path, options=[("grpc.default_authority", self.trust_domain.name)]
        )
        self._stub = agent_pb2_grpc.AgentAPIStub(self._channel)  # type: ignore[no-untyped-call,unused-ignore]
        self._material = None

    def _retire_channel(self) -> None:
        """Let calls in flight on the current channel finish, then close it.

        grpc.aio cancels every call of a channel that closes, and a call cancelled that way
        raises CancelledError in whoever awaits it (a workload's FetchJWTSVID, say). A new
        channel takes over at once; the old one closes after its calls, at most CALL_TIMEOUT.
        """
        if self._channel is None:
            return
        task = asyncio.get_running_loop().create_task(self._channel.close(grace=CALL_TIMEOUT))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        self._channel = self._stub = None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None
        self._material = None
        for task in list(self._retiring):
            task.cancel()
        if self.tunnel is not None:
            await self.tunnel.close()
            self.tunnel = None
        if self._own_tunnel_dir and self._tunnel_dir is not None:
            shutil.rmtree(self._tunnel_dir, ignore_errors=True)
            self._tunnel_dir, self._own_tunnel_dir = None, False

    async def attest(self, attestor: AgentAttestor | str, csr: bytes) -> Attestation:
        """The attestation conversation with the node attestor (a join token string is
        shorthand for the join_token attestor)."""
        if isinstance(attestor, str):
            attestor = join_token.JoinTokenAgent(attestor)
        # The agent halves block (tpm2-tools for a second or two, metadata services): they
        # run off the event loop so the Workload API keeps answering meanwhile.
        payload = await asyncio.to_thread(attestor.payload)
        call = self._stub.AttestAgent(metadata=self._metadata, timeout=CALL_TIMEOUT)
        await call.write(
            agent_pb2.AttestAgentRequest(
                trust_domain=self.trust_domain.name,
                attestation_type=attestor.type,
                attestation_data=payload,
                csr=csr,
            )
        )
        response = await call.read()
        if response is not grpc.aio.EOF and response.challenge:
            answer = await asyncio.to_thread(attestor.respond, bytes(response.challenge))
            await call.write(agent_pb2.AttestAgentRequest(challenge_response=answer))
            response = await call.read()
        await call.done_writing()
        if response is grpc.aio.EOF or not response.spiffe_id:
            await call  # raises the call's error status, if any
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.INTERNAL,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="the attestation stream ended without an answer",
            )
        return Attestation(
            spiffe_id=SpiffeId.parse(response.spiffe_id),
            chain=_certificates(list(response.svid_chain)),
            bundle=bundle_from_proto(self.trust_domain, response.bundle),
        )

    async def renew(self, csr: bytes) -> tuple[x509.Certificate, ...]:
        response = await self._stub.RenewAgent(
            agent_pb2.RenewAgentRequest(csr=csr), metadata=self._metadata, timeout=CALL_TIMEOUT
        )
        return _certificates(list(response.svid_chain))

    async def fetch_bundle(self) -> BundleSet:
        response = await self._stub.FetchBundle(
            agent_pb2.FetchBundleRequest(), metadata=self._metadata, timeout=CALL_TIMEOUT
        )
        return BundleSet(
            bundle_from_proto(self.trust_domain, response),
            federated_from_proto(response),
            taint_from_proto(response),
        )

    async def sync_authorized_entries(
        self, since_revision: int = 0, page_size: int = DEFAULT_PAGE_SIZE
    ) -> SyncPage:
        request = agent_pb2.SyncAuthorizedEntriesRequest(
            since_revision=since_revision, page_size=page_size
        )
        response = await self._stub.SyncAuthorizedEntries(
            request, metadata=self._metadata, timeout=CALL_TIMEOUT
        )
        return SyncPage(
            entries=tuple(entry_from_proto(e) for e in response.entries),
            removed_entry_ids=tuple(response.removed_entry_ids),
            revision=int(response.revision),
            more=bool(response.more),
            full=bool(response.full),
            agent_id=response.agent_id,
        )

    async def new_jwt_svid(self, entry_id: str, audience: Sequence[str]) -> MintedJwt:
        request = agent_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=list(audience))
        response = await self._stub.NewJWTSVID(
            request, metadata=self._metadata, timeout=CALL_TIMEOUT
        )
        return MintedJwt(response.token, float(response.issued_at), float(response.expires_at))

    async def watch_updates(self) -> AsyncIterator[UpdateNotice]:
        """The WatchUpdates stream (no deadline); ends or raises when the channel goes."""
        call = self._stub.WatchUpdates(agent_pb2.WatchUpdatesRequest(), metadata=self._metadata)
        try:
            async for notice in call:
                yield UpdateNotice(
                    int(notice.entries_revision), int(notice.bundle_sequence), bool(notice.resync)
                )
        finally:
            call.cancel()

    async def batch_new_x509_svid(self, csrs: dict[str, bytes]) -> list[SvidResult]:
        request = agent_pb2.BatchNewX509SVIDRequest(
            params=[agent_pb2.NewX509SVIDParams(entry_id=k, csr=v) for k, v in csrs.items()]
        )
        response = await self._stub.BatchNewX509SVID(
            request, metadata=self._metadata, timeout=CALL_TIMEOUT
        )
        return [
            SvidResult(r.entry_id, _certificates(list(r.svid_chain)), r.error_code, r.error)
            for r in response.results
        ]
