"""The AgentAPI servicer: protobuf in, issuance services in the caller's tenant, status out."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hallmark.bundle import Bundle
from hallmark.errors import HallmarkError
from hallmark.jwtsvid import JwtSvidError
from hallmark.protos import agent_pb2, agent_pb2_grpc
from hallmark.relay import PeerRegistry
from hallmark.relaylimits import source_of
from issuance import services
from issuance.agentapi.limits import AttestationFailures
from issuance.agentapi.recheck import AgentRechecks
from issuance.agentapi.scoped import OrmThreads
from issuance.agentapi.watch import ChangeHub
from issuance.errors import AttestationRateLimited, InvalidAttestationRequest
from issuance.models import Agent, Entry
from tenants.audit.context import accepted, request_context

if TYPE_CHECKING:
    from tenants.models import Tenant

log = logging.getLogger(__name__)
T = TypeVar("T")
TRUST_DOMAIN_METADATA = "x-hallmark-trust-domain"
_STATUS_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# A status detail goes out as a percent-encoded trailer, which clients refuse past 16 KiB:
# an error that echoes a huge input would reach the agent as a broken stream, not a code.
MAX_DETAIL_CHARS = 512
# Without a change event, a watch stream still gets a notice this often: the safety net for
# a lost event, and the moment a stream re-checks the agent (expired SVID, ban).
WATCH_KEEPALIVE_SECONDS = 30.0
# How long an attesting agent may take to send a message (its request, a challenge's answer).
CHALLENGE_TIMEOUT_SECONDS = 30.0
# Refused attestations (`rate_limited`) one source may have waiting out their delay at once
# in this process; one more, and that one is answered at once and its connection closed.
MAX_HELD_REFUSALS_PER_SOURCE = 8
# After a refusal that closes its connection, how long the answer has to leave first.
CLOSE_AFTER_REFUSAL_SECONDS = 0.25


@dataclass(frozen=True)
class AgentPeer:
    """What the TLS front learned of a connection: tenant (by SNI) and client certificate."""

    tenant_id: uuid.UUID
    server_name: str
    certificate_der: bytes | None
    address: str

    @property
    def certificate(self) -> x509.Certificate | None:
        if self.certificate_der is None:
            return None
        return x509.load_der_x509_certificate(self.certificate_der)


def status_of(error: HallmarkError) -> grpc.StatusCode:
    if isinstance(error, JwtSvidError):
        # Only a bad request is the caller's fault; any other JWT error is ours.
        if error.code == "jwt_invalid_request":
            return grpc.StatusCode.INVALID_ARGUMENT
        return grpc.StatusCode.INTERNAL
    return _STATUS_BY_HTTP.get(int(getattr(error, "http_status", 400)), grpc.StatusCode.INTERNAL)


def _der(certificates: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in certificates]


def bundle_message(bundle: Bundle) -> Any:
    return agent_pb2.Bundle(
        trust_domain=bundle.trust_domain.name,
        x509_authorities=_der(list(bundle.x509_authorities)),
        spiffe_bundle=bundle.to_json(),
        sequence=bundle.sequence,
    )


def entry_message(entry: Entry) -> Any:
    return agent_pb2.Entry(
        id=str(entry.id),
        spiffe_id=entry.spiffe_id,
        parent_id=entry.parent_id,
        selectors=entry.selectors,
        x509_svid_ttl=entry.x509_svid_ttl,
        jwt_svid_ttl=entry.jwt_svid_ttl,
        dns_names=entry.dns_names,
        hint=entry.hint,
        federates_with=entry.federates_with,
        admin=entry.admin,
        downstream=entry.downstream,
        revision=entry.revision,
        expires_at=int(entry.expires_at.timestamp()) if entry.expires_at else 0,
    )


class AgentApiServicer(agent_pb2_grpc.AgentAPIServicer):  # type: ignore[misc]
    """AgentAPI for every tenant; each call is scoped to the tenant its TLS SNI selected."""

    def __init__(
        self,
        registry: PeerRegistry[AgentPeer],
        threads: OrmThreads,
        hub: ChangeHub,
        attestation_failures: AttestationFailures,
        *,
        refusal_delay: float = 0.0,
    ) -> None:
        self.registry = registry
        self.threads = threads
        self.hub = hub
        self.rechecks = AgentRechecks(threads)
        self.attestation_failures = attestation_failures
        self.refusal_delay = refusal_delay
        self.held_refusals: Counter[str] = Counter()  # per source, waiting out their delay
        self.calls = 0  # calls received by this process, logged when it stops

    # -- boundary ----------------------------------------------------------------------------
    async def _abort(self, context: Any, code: grpc.StatusCode, slug: str, detail: str) -> NoReturn:
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
            # The server's own trouble (key manager down, ...): operators read it here, not
            # only in the agents' logs.
            log.warning("agent API answered %s %s: %s", code.name, slug, detail)
        await context.abort(code, f"{slug}: {detail}")
        raise AssertionError("unreachable")  # context.abort raises

    async def _peer(self, context: Any) -> AgentPeer:
        self.calls += 1
        peer = self.registry.lookup(context.peer())
        if peer is None:
            await self._abort(
                context, grpc.StatusCode.UNAUTHENTICATED, "no_tls_peer", "connect through TLS"
            )
        metadata = dict(context.invocation_metadata() or ())
        claimed = metadata.get(TRUST_DOMAIN_METADATA)
        if claimed != peer.server_name:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "trust_domain_mismatch",
                f"metadata {TRUST_DOMAIN_METADATA} must be the trust domain named by TLS SNI "
                f"({peer.server_name}); got {claimed!r}",
            )
        return peer

    async def _call(self, context: Any, peer: AgentPeer, work: Callable[[Tenant], T]) -> T:
        # The call's audit events carry its request id (the agent's x-request-id if sane).
        metadata = dict(context.invocation_metadata() or ())
        request_id = accepted(metadata.get("x-request-id"))

        def traced(tenant: Tenant) -> T:
            with request_context(request_id, peer.address):
                return work(tenant)

        try:
            return await self.threads.in_tenant_schema(peer.tenant_id, traced)
        except HallmarkError as exc:
            await self._abort(context, status_of(exc), exc.code, exc.detail)
        except Exception:
            log.exception("agent API call failed (tenant %s, %s)", peer.tenant_id, peer.address)
            await self._abort(
                context, grpc.StatusCode.INTERNAL, "internal_error", "the server failed; try again"
            )

    def _authenticated(
        self, peer: AgentPeer, work: Callable[[Tenant, Agent], T]
    ) -> Callable[[Tenant], T]:
        def run(tenant: Tenant) -> T:
            # `tenant` was read from the database at the start of this call (scoped.py).
            agent = services.authenticate_agent(peer.certificate, tenant_read_now=tenant)
            return work(tenant, agent)

        return run

    # -- RPCs --------------------------------------------------------------------------------
    async def AttestAgent(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """The attestation conversation: payload, then (maybe) a challenge and its answer."""
        peer = await self._peer(context)
        failures, source = self.attestation_failures, source_of(source_address(peer.address))
        # A source over its limit is refused before its request is even read. This process's
        # own count answers on the event loop (a flood from one connection is refused without
        # a thread or a Redis round trip); only when it is under the limit here is the count
        # shared by every agent-API process asked, in Redis, off the event loop.
        if failures.blocked_here(source) or await asyncio.to_thread(failures.blocked, source):
            # Refused before any database work; the refusal is counted like a failure (in
            # this process's audit aggregate; the shared count is over the limit already).
            refused = AttestationRateLimited(
                "too many failed attestations from this address; wait and retry"
            )
            if failures.failed(peer.tenant_id, source, refused.code, refused=True):
                await self._call(
                    context,
                    peer,
                    lambda tenant: services.record_failed_attestation(
                        tenant=tenant, source=peer.address, error=refused, outcome="denied"
                    ),
                )
            await self._hold_refusal(context, source)
            await self._abort(context, status_of(refused), refused.code, refused.detail)

        request = await self._next_message(context, request_iterator, "the attestation request")
        if request.trust_domain != peer.server_name:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "trust_domain_mismatch",
                f"trust_domain {request.trust_domain!r} is not the one TLS SNI named "
                f"({peer.server_name})",
            )

        attestation_type, data = request.attestation_type, bytes(request.attestation_data)
        csr = bytes(request.csr)

        def challenge_of(tenant: Tenant) -> bytes | None:
            return services.attestation_challenge(
                tenant=tenant,
                attestation_type=attestation_type,
                attestation_data=data,
                csr=csr,
                source=peer.address,
                audit_failure=lambda exc: failures.failed(tenant.id, source, exc.code),
            )

        challenge = await self._call(context, peer, challenge_of)
        answer: bytes | None = None
        if challenge is not None:
            yield agent_pb2.AttestAgentResponse(challenge=challenge)
            reply = await self._next_message(
                context, request_iterator, "the challenge response", audit=(peer, source)
            )
            answer = bytes(reply.challenge_response)

        def attest(tenant: Tenant) -> Any:
            result = services.attest_agent(
                tenant=tenant,
                attestation_type=attestation_type,
                attestation_data=data,
                csr=csr,
                source=peer.address,
                audit_failure=lambda exc: failures.failed(tenant.id, source, exc.code),
                challenge=challenge,
                challenge_response=answer,
            )
            return agent_pb2.AttestAgentResponse(
                spiffe_id=result.agent.spiffe_id,
                svid_chain=_der(result.chain),
                bundle=bundle_message(result.bundle),
            )

        yield await self._call(context, peer, attest)

    async def _hold_refusal(self, context: Any, source: str) -> None:
        """Answer a refused attestation only after `refusal_delay` (a tarpit): a client that
        waits for each answer, as a flood loop or a retrying agent does, gets one refusal a
        delay, and the plane holds a sleeping coroutine meanwhile, not a busy core. A source
        with MAX_HELD_REFUSALS_PER_SOURCE already waiting is sending without waiting for
        answers: it is answered at once and its connection is closed, and its new connections
        are closed at accept until its window ends (AttestationFailures.refuses_connection).
        """
        if self.refusal_delay <= 0:
            return
        if self.held_refusals[source] >= MAX_HELD_REFUSALS_PER_SOURCE:
            grpc_peer = context.peer()
            asyncio.get_running_loop().call_later(
                CLOSE_AFTER_REFUSAL_SECONDS, self.registry.disconnect, grpc_peer
            )
            return
        self.held_refusals[source] += 1
        try:
            await asyncio.sleep(self.refusal_delay)
        finally:
            self.held_refusals[source] -= 1
            if self.held_refusals[source] <= 0:
                del self.held_refusals[source]

    async def _next_message(
        self,
        context: Any,
        request_iterator: AsyncIterator[Any],
        what: str,
        audit: tuple[AgentPeer, str] | None = None,
    ) -> Any:
        try:
            return await asyncio.wait_for(anext(request_iterator), CHALLENGE_TIMEOUT_SECONDS)
        except (StopAsyncIteration, TimeoutError):
            incomplete = InvalidAttestationRequest(
                f"the stream ended (or stalled) before {what}", code="attestation_incomplete"
            )
            if audit is not None:  # an attestation that began and was abandoned is audited
                peer, source = audit
                if await asyncio.to_thread(
                    self.attestation_failures.failed, peer.tenant_id, source, incomplete.code
                ):
                    await self._call(
                        context,
                        peer,
                        lambda tenant: services.record_failed_attestation(
                            tenant=tenant, source=peer.address, error=incomplete
                        ),
                    )
            await self._abort(context, status_of(incomplete), incomplete.code, incomplete.detail)

    async def RenewAgent(self, request: Any, context: Any) -> Any:  # noqa: N802
        peer = await self._peer(context)

        def renew(tenant: Tenant, agent: Agent) -> Any:
            chain = services.renew_agent(
                tenant=tenant, agent=agent, csr=bytes(request.csr), source=peer.address
            )
            return agent_pb2.RenewAgentResponse(svid_chain=_der(chain))

        return await self._call(context, peer, self._authenticated(peer, renew))

    async def FetchBundle(self, request: Any, context: Any) -> Any:  # noqa: N802
        peer = await self._peer(context)

        def fetch(tenant: Tenant, agent: Agent) -> Any:
            from trustdomains import services as trustdomain_services

            message = bundle_message(trustdomain_services.current_bundle())
            _add_tainted(message, trustdomain_services)
            names = services.federated_trust_domains(agent)
            for name, bundle in _federated_bundles(names).items():
                message.federated_bundles[name] = bundle.to_json()
            return message

        return await self._call(context, peer, self._authenticated(peer, fetch))

    async def SyncAuthorizedEntries(self, request: Any, context: Any) -> Any:  # noqa: N802
        peer = await self._peer(context)
        since, page_size = int(request.since_revision), int(request.page_size)

        def sync(tenant: Tenant, agent: Agent) -> Any:
            messages: dict[uuid.UUID, Any] = {}

            def size_of(entry: Entry) -> int:
                messages[entry.id] = entry_message(entry)
                return int(messages[entry.id].ByteSize()) + 4  # + field tag and length

            page = services.sync_page(
                tenant=tenant,
                agent=agent,
                since_revision=since,
                page_size=page_size,
                size_of=size_of,
            )
            return agent_pb2.SyncAuthorizedEntriesResponse(
                entries=[messages.get(e.id) or entry_message(e) for e in page.entries],
                agent_id=agent.spiffe_id,
                node_aliases=agent.node_aliases,
                removed_entry_ids=page.removed_entry_ids,
                revision=page.revision,
                more=page.more,
                full=page.full,
            )

        return await self._call(context, peer, self._authenticated(peer, sync))

    async def BatchNewX509SVID(self, request: Any, context: Any) -> Any:  # noqa: N802
        peer = await self._peer(context)
        wanted = [services.SvidRequest(p.entry_id, bytes(p.csr)) for p in request.params]

        def sign(tenant: Tenant, agent: Agent) -> Any:
            results = services.new_x509_svids(
                tenant=tenant, agent=agent, requests=wanted, source=peer.address
            )
            return agent_pb2.BatchNewX509SVIDResponse(
                results=[
                    agent_pb2.X509SVIDResult(
                        entry_id=r.entry_id,
                        svid_chain=_der(r.chain),
                        error_code=r.error_code,
                        error=r.error,
                    )
                    for r in results
                ]
            )

        return await self._call(context, peer, self._authenticated(peer, sign))

    async def NewJWTSVID(self, request: Any, context: Any) -> Any:  # noqa: N802
        peer = await self._peer(context)
        entry_id, audience = str(request.entry_id), list(request.audience)

        def mint(tenant: Tenant, agent: Agent) -> Any:
            minted = services.new_jwt_svid(
                tenant=tenant,
                agent=agent,
                entry_id=entry_id,
                audience=audience,
                source=peer.address,
            )
            return agent_pb2.NewJWTSVIDResponse(
                token=minted.token, issued_at=minted.issued_at, expires_at=minted.expires_at
            )

        return await self._call(context, peer, self._authenticated(peer, mint))

    async def WatchUpdates(  # noqa: N802
        self, request: Any, context: Any
    ) -> AsyncIterator[Any]:
        """A notice at once, then one per burst of the tenant's changes (and a keepalive)."""
        peer = await self._peer(context)
        watcher = self.hub.subscribe(peer.tenant_id)  # before the first read: nothing is missed
        try:
            # Batched with other streams' checks: a replica's agents reconnecting at once (a
            # peer drained) cost a database call a batch, not one each.
            await self._recheck(context, peer)
            resync = False
            while True:
                entries_revision, bundle_sequence = await self._revisions(context, peer)
                yield agent_pb2.UpdateNotice(
                    entries_revision=entries_revision,
                    bundle_sequence=bundle_sequence,
                    resync=resync,
                )
                kinds = await watcher.wait(WATCH_KEEPALIVE_SECONDS)
                if not kinds or kinds & {"agents", "bundle"}:
                    # Banned, evicted, superseded or expired SVID: the stream ends here.
                    await self._recheck(context, peer)
                # A federated bundle has no revision of its own: ask for a fetch outright.
                resync = "federation" in kinds
        finally:
            self.hub.unsubscribe(watcher)

    async def _recheck(self, context: Any, peer: AgentPeer) -> None:
        """The stream's agent checked again, in one database call with other streams'."""
        try:
            await self.rechecks.check(peer)
        except HallmarkError as exc:
            await self._abort(context, status_of(exc), exc.code, exc.detail)
        except Exception:
            log.exception("watch: re-checking an agent of tenant %s failed", peer.tenant_id)
            await self._abort(
                context, grpc.StatusCode.INTERNAL, "internal_error", "the server failed; try again"
            )

    async def _revisions(self, context: Any, peer: AgentPeer) -> tuple[int, int]:
        async def read() -> tuple[int, int]:
            return await self.threads.in_tenant_schema(peer.tenant_id, _tenant_revisions)

        try:
            return await self.hub.revisions(peer.tenant_id, read)
        except HallmarkError as exc:
            await self._abort(context, status_of(exc), exc.code, exc.detail)
        except Exception:
            log.exception("watch: reading revisions of tenant %s failed", peer.tenant_id)
            await self._abort(
                context, grpc.StatusCode.UNAVAILABLE, "internal_error", "reconnect and retry"
            )


def _nothing(tenant: Tenant, agent: Agent) -> None:
    return None


def source_address(address: str) -> str:
    """The IP address of a peer written `host:port` (the port says nothing of who it is)."""
    return address.rsplit(":", 1)[0] if ":" in address else address


def _tenant_revisions(tenant: Tenant) -> tuple[int, int]:
    from trustdomains import services as trustdomain_services

    head = services.current_revisions().head
    return head, int(trustdomain_services.get_trust_domain().bundle_sequence)


def _add_tainted(message: Any, trustdomain_services: Any) -> None:
    """The published authorities that are tainted: agents replace what they signed."""
    trust_domain = trustdomain_services.get_trust_domain()
    message.tainted_x509_authorities.extend(
        bytes(a.certificate_der)
        for a in trustdomain_services.published_x509_authorities(trust_domain)
        if a.tainted
    )
    message.tainted_jwt_key_ids.extend(
        a.key_id for a in trustdomain_services.published_jwt_authorities(trust_domain) if a.tainted
    )


def _federated_bundles(names: list[str]) -> dict[str, Bundle]:
    if not names:
        return {}
    try:
        from federation.services import federated_bundles
    except ImportError:  # federation not deployed in this build: no foreign bundles
        log.warning("federation.services.federated_bundles is missing; no federated bundles")
        return {}
    return federated_bundles(names)
