"""Test-only stand-in for the control plane's agent API, speaking the real wire protocol.

gRPC over TLS terminated by hallmark.relay (as the control plane does it): the server
presents `spiffe://<td>/spire/server` with DNS SAN `<td>`, requests but does not require a
client certificate, and the servicer sees the verified client SVID by `context.peer()`.
It lets the agent's client and manager be tested before the real control plane exists;
tests/e2e runs the agent against the real one.

It follows agent.proto's semantics: every entry change bumps a tenant-wide revision and is
logged (upserts and removals); SyncAuthorizedEntries pages through the log in revision order
(`more`, `revision`), answers `full` when the asked revision predates the removal history
(`forget_removals`), NewJWTSVID mints ES256 JWT-SVIDs with the authority's JWT key, and
WatchUpdates pushes a notice at once and after every change. Mutate it with `put_entry`,
`remove_entry`, `set_federated_bundle`, `rotate_jwt_key`, `rotate_x509_authority`,
`taint_x509_authority`, `taint_jwt_key`, from any thread. FetchBundle lists tainted authorities
(`tainted_x509_authorities`, `tainted_jwt_key_ids`) as the control plane does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.bundle import Bundle, JwtAuthority
from hallmark.jwtsvid import JwtSvidError, mint_jwt_svid
from hallmark.protos import agent_pb2, agent_pb2_grpc
from hallmark.relay import PeerRegistry, Relay, private_socket_path
from hallmark.signing import LocalSigner
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import (
    LeafRequest,
    build_leaf,
    build_signing_certificate,
    public_key_from_csr,
    utcnow,
    verify_x509_svid,
)


@dataclass
class Peer:
    """What the relay learned of a TLS client: its verified certificate chain, if any."""

    certificate: x509.Certificate | None


@dataclass
class StandinEntry:
    id: str
    spiffe_id: str
    selectors: list[str]
    revision: int = 0
    federates_with: list[str] = field(default_factory=list)
    jwt_svid_ttl: int = 300
    x509_svid_ttl: int = 3600
    hint: str = ""


@dataclass
class Calls:
    """What the stand-in saw, for assertions."""

    attest: int = 0
    renew: int = 0
    batches: list[list[str]] = field(default_factory=list)
    syncs: list[tuple[int, int]] = field(default_factory=list)
    jwt_mints: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    watches: int = 0
    metadata_trust_domains: set[str] = field(default_factory=set)
    client_ids: set[str] = field(default_factory=set)


class Authority:
    """A trust domain's CA in memory."""

    def __init__(self, trust_domain: TrustDomain) -> None:
        self.trust_domain = trust_domain
        self.signer = LocalSigner.generate()
        now = utcnow()
        self.ca = build_signing_certificate(
            trust_domain=trust_domain,
            subject_key=self.signer.public_key(),
            signer=self.signer,
            not_before=now - dt.timedelta(minutes=1),
            not_after=now + dt.timedelta(days=1),
        )
        self.jwt_signer = LocalSigner.generate()
        self.jwt_key_id = "jwt-key-1"
        self.sequence = 1
        # Every published CA (the active one, `ca`, last), older JWT keys still published,
        # and what is tainted.
        self.cas: list[x509.Certificate] = [self.ca]
        self.old_jwt_keys: list[JwtAuthority] = []
        self.tainted_cas: list[x509.Certificate] = []
        self.tainted_key_ids: list[str] = []

    def rotate_jwt_key(self, keep_old: bool = False) -> None:
        if keep_old:
            self.old_jwt_keys.append(JwtAuthority(self.jwt_key_id, self.jwt_signer.public_key()))
        self.jwt_signer = LocalSigner.generate()
        self.jwt_key_id = f"jwt-key-{self.sequence + 1}"
        self.sequence += 1

    def rotate_x509(self) -> x509.Certificate:
        """A new active CA signs from now on; the previous one stays published. Returns it."""
        old = self.ca
        self.signer = LocalSigner.generate()
        now = utcnow()
        self.ca = build_signing_certificate(
            trust_domain=self.trust_domain,
            subject_key=self.signer.public_key(),
            signer=self.signer,
            not_before=now - dt.timedelta(minutes=1),
            not_after=now + dt.timedelta(days=1),
        )
        self.cas.append(self.ca)
        self.sequence += 1
        return old

    def bundle(self) -> Bundle:
        current = JwtAuthority(self.jwt_key_id, self.jwt_signer.public_key())
        return Bundle(
            self.trust_domain,
            tuple(self.cas),
            (*self.old_jwt_keys, current),
            sequence=self.sequence,
        )

    def leaf(
        self,
        spiffe_id: SpiffeId,
        key: ec.EllipticCurvePublicKey,
        ttl: dt.timedelta,
        dns_names: tuple[str, ...] = (),
    ) -> x509.Certificate:
        return build_leaf(
            LeafRequest(spiffe_id, key, ttl, dns_names), ca=self.ca, signer=self.signer
        )

    def bundle_proto(self, federated: dict[str, bytes] | None = None) -> Any:
        return agent_pb2.Bundle(
            trust_domain=self.trust_domain.name,
            x509_authorities=[c.public_bytes(serialization.Encoding.DER) for c in self.cas],
            spiffe_bundle=self.bundle().to_json(),
            sequence=self.sequence,
            federated_bundles=federated or {},
            tainted_x509_authorities=[
                c.public_bytes(serialization.Encoding.DER) for c in self.tainted_cas
            ],
            tainted_jwt_key_ids=self.tainted_key_ids,
        )


def _entry_message(entry: StandinEntry, parent_id: str) -> Any:
    return agent_pb2.Entry(
        id=entry.id,
        spiffe_id=entry.spiffe_id,
        parent_id=parent_id,
        selectors=entry.selectors,
        revision=entry.revision,
        x509_svid_ttl=entry.x509_svid_ttl,
        jwt_svid_ttl=entry.jwt_svid_ttl,
        federates_with=entry.federates_with,
        hint=entry.hint,
    )


DEFAULT_PAGE_SIZE = 500


class StandinServicer(agent_pb2_grpc.AgentAPIServicer):  # type: ignore[misc]
    def __init__(self, authority: Authority, registry: PeerRegistry[Peer], token: str) -> None:
        self.authority = authority
        self.registry = registry
        self.tokens = {token}
        self.entries: dict[str, StandinEntry] = {}
        self.revision = 0
        # (revision, entry id, removed?) in revision order; removals older than the floor
        # are forgotten, as a server's bounded removal history would.
        self.log: list[tuple[int, str, bool]] = []
        self.history_floor = 0
        self.federated: dict[str, bytes] = {}
        self.calls = Calls()
        self.agent_ttl = dt.timedelta(hours=1)
        self.agent_id = authority.trust_domain.spiffe_id("/spire/agent/join_token/token-1")
        self.loop: asyncio.AbstractEventLoop | None = None
        # Called with each new CA (the TLS front must accept client SVIDs it signs).
        self.on_new_ca: Any = None
        # When set, BatchNewX509SVID answers this error code for every entry (an outage).
        self.svid_error = ""
        self._watchers: set[asyncio.Queue[Any]] = set()

    # -- mutations (thread-safe: the push is scheduled on the server's loop) --------------

    def put_entry(self, entry: StandinEntry) -> StandinEntry:
        self.revision += 1
        entry.revision = self.revision
        self.entries[entry.id] = entry
        self.log.append((self.revision, entry.id, False))
        self._push()
        return entry

    def set_entries(self, entries: list[StandinEntry]) -> None:
        for entry_id in list(self.entries):
            if entry_id not in {e.id for e in entries}:
                self.remove_entry(entry_id)
        for entry in entries:
            self.put_entry(entry)

    def remove_entry(self, entry_id: str) -> None:
        if self.entries.pop(entry_id, None) is None:
            return
        self.revision += 1
        self.log.append((self.revision, entry_id, True))
        self._push()

    def forget_removals(self) -> None:
        """Drop the removal history: agents behind this revision must resync in full."""
        self.history_floor = self.revision
        self.log = [(r, i, gone) for r, i, gone in self.log if i in self.entries and not gone]

    def set_federated_bundle(self, name: str, bundle: Bundle | None) -> None:
        if bundle is None:
            self.federated.pop(name, None)
        else:
            self.federated[name] = bundle.to_json()
        self._push(resync=True)

    def rotate_jwt_key(self) -> None:
        self.authority.rotate_jwt_key()
        self._push()

    def rotate_x509_authority(self) -> x509.Certificate:
        """Activate a new CA (the old one stays published); returns the old one."""
        old = self.authority.rotate_x509()
        if self.on_new_ca is not None:
            self.on_new_ca(self.authority.ca)
        self._push()
        return old

    def taint_x509_authority(self, ca: x509.Certificate) -> None:
        self.authority.tainted_cas.append(ca)
        self.authority.sequence += 1
        self._push()

    def taint_jwt_key(self) -> str:
        """A new JWT key signs from now on; the old one stays published, tainted. Its kid."""
        old = self.authority.jwt_key_id
        self.authority.rotate_jwt_key(keep_old=True)
        self.authority.tainted_key_ids.append(old)
        self.authority.sequence += 1
        self._push()
        return old

    def _notice(self, resync: bool = False) -> Any:
        return agent_pb2.UpdateNotice(
            entries_revision=self.revision,
            bundle_sequence=self.authority.sequence,
            resync=resync,
        )

    def _push(self, resync: bool = False) -> None:
        if self.loop is None:
            return
        notice = self._notice(resync)
        for queue in list(self._watchers):
            self.loop.call_soon_threadsafe(queue.put_nowait, notice)

    # -- RPCs ------------------------------------------------------------------------------

    def _check(self, context: Any) -> None:
        for key, value in context.invocation_metadata():
            if key == "x-hallmark-trust-domain":
                self.calls.metadata_trust_domains.add(value)

    async def _client_id(self, context: Any) -> SpiffeId:
        peer = self.registry.lookup(context.peer())
        if peer is None or peer.certificate is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "no_client_certificate: attest first"
            )
        assert peer is not None and peer.certificate is not None
        spiffe_id = verify_x509_svid([peer.certificate], self.authority.cas)
        self.calls.client_ids.add(str(spiffe_id))
        return spiffe_id

    async def AttestAgent(self, requests: Any, context: Any) -> Any:  # noqa: N802
        request = await anext(requests)
        yield await self._attest(request, context)

    async def _attest(self, request: Any, context: Any) -> Any:
        self._check(context)
        self.calls.attest += 1
        token = json.loads(request.attestation_data)["token"]
        if request.attestation_type != "join_token" or token not in self.tokens:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "join_token_used: unknown or used"
            )
        self.tokens.discard(token)
        leaf = self.authority.leaf(self.agent_id, public_key_from_csr(request.csr), self.agent_ttl)
        return agent_pb2.AttestAgentResponse(
            spiffe_id=str(self.agent_id),
            svid_chain=[leaf.public_bytes(serialization.Encoding.DER)],
            bundle=self.authority.bundle_proto(),
        )

    async def RenewAgent(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._check(context)
        spiffe_id = await self._client_id(context)
        self.calls.renew += 1
        leaf = self.authority.leaf(spiffe_id, public_key_from_csr(request.csr), self.agent_ttl)
        return agent_pb2.RenewAgentResponse(
            svid_chain=[leaf.public_bytes(serialization.Encoding.DER)]
        )

    async def FetchBundle(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._check(context)
        await self._client_id(context)
        # Only the foreign trust domains the agent's entries federate with (agent.proto).
        wanted = {name for e in self.entries.values() for name in e.federates_with}
        federated = {n: doc for n, doc in self.federated.items() if n in wanted}
        return self.authority.bundle_proto(federated)

    async def SyncAuthorizedEntries(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._check(context)
        agent_id = str(await self._client_id(context))
        since = int(request.since_revision)
        page_size = int(request.page_size) or DEFAULT_PAGE_SIZE
        self.calls.syncs.append((since, page_size))
        full = 0 < since < self.history_floor
        if full:
            since = 0
        # The latest change per entry after `since`, in revision order.
        latest: dict[str, tuple[int, bool]] = {}
        for revision, entry_id, removed in self.log:
            if revision > since:
                latest.pop(entry_id, None)
                latest[entry_id] = (revision, removed)
        changes = sorted(latest.items(), key=lambda item: item[1][0])
        if since == 0:  # from scratch: removals are meaningless
            changes = [c for c in changes if not c[1][1]]
        page, rest = changes[:page_size], changes[page_size:]
        revision = page[-1][1][0] if rest else self.revision
        return agent_pb2.SyncAuthorizedEntriesResponse(
            agent_id=agent_id,
            entries=[
                _entry_message(self.entries[entry_id], agent_id)
                for entry_id, (_, removed) in page
                if not removed
            ],
            removed_entry_ids=[entry_id for entry_id, (_, removed) in page if removed],
            revision=revision,
            more=bool(rest),
            full=full,
        )

    async def BatchNewX509SVID(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._check(context)
        await self._client_id(context)
        self.calls.batches.append([p.entry_id for p in request.params])
        results = []
        for params in request.params:
            entry = self.entries.get(params.entry_id)
            if self.svid_error:
                results.append(
                    agent_pb2.X509SVIDResult(
                        entry_id=params.entry_id, error_code=self.svid_error, error="stand-in"
                    )
                )
                continue
            if entry is None:
                results.append(
                    agent_pb2.X509SVIDResult(
                        entry_id=params.entry_id,
                        error_code="entry_not_found",
                        error="no such entry",
                    )
                )
                continue
            leaf = self.authority.leaf(
                SpiffeId.parse(entry.spiffe_id),
                public_key_from_csr(params.csr),
                dt.timedelta(seconds=entry.x509_svid_ttl),
            )
            results.append(
                agent_pb2.X509SVIDResult(
                    entry_id=entry.id, svid_chain=[leaf.public_bytes(serialization.Encoding.DER)]
                )
            )
        return agent_pb2.BatchNewX509SVIDResponse(results=results)

    async def NewJWTSVID(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._check(context)
        await self._client_id(context)
        entry = self.entries.get(request.entry_id)
        if entry is None:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "entry_not_authorized: no such entry"
            )
        assert entry is not None
        audience = tuple(request.audience)
        self.calls.jwt_mints.append((entry.id, audience))
        now = dt.datetime.now(dt.UTC)
        try:
            token = mint_jwt_svid(
                spiffe_id=SpiffeId.parse(entry.spiffe_id),
                audience=audience,
                ttl=dt.timedelta(seconds=entry.jwt_svid_ttl),
                key_id=self.authority.jwt_key_id,
                signer=self.authority.jwt_signer,
                now=now,
            )
        except JwtSvidError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code}: {exc.detail}")
        issued_at = int(now.timestamp())
        return agent_pb2.NewJWTSVIDResponse(
            token=token, issued_at=issued_at, expires_at=issued_at + entry.jwt_svid_ttl
        )

    async def WatchUpdates(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._check(context)
        await self._client_id(context)
        self.calls.watches += 1
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            yield self._notice()
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)


class AgentApiStandin:
    """Start with `await start()`; `port`, `authority`, `servicer` for the test."""

    def __init__(self, trust_domain: str = "example.org", token: str = "good-token") -> None:
        self.trust_domain = TrustDomain(trust_domain)
        self.authority = Authority(self.trust_domain)
        self.registry: PeerRegistry[Peer] = PeerRegistry()
        self.servicer = StandinServicer(self.authority, self.registry, token)
        self.port = 0
        self._dir = tempfile.mkdtemp(prefix="hallmark-standin-")
        self._server: Any = None
        self._relay: Relay[Peer] | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        td = self.trust_domain
        leaf = self.authority.leaf(
            td.spiffe_id("/spire/server"), key.public_key(), dt.timedelta(hours=1), (td.name,)
        )
        cert_path = os.path.join(self._dir, "server.pem")
        key_path = os.path.join(self._dir, "server.key")
        with open(cert_path, "wb") as handle:
            handle.write(leaf.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(
            cadata=self.authority.ca.public_bytes(serialization.Encoding.PEM).decode()
        )
        context.set_alpn_protocols(["h2"])

        def trust(ca: x509.Certificate) -> None:
            # New handshakes see CAs added to the live context's store.
            context.load_verify_locations(
                cadata=ca.public_bytes(serialization.Encoding.PEM).decode()
            )

        self.servicer.on_new_ca = trust
        return context

    async def start(self) -> None:
        self.servicer.loop = asyncio.get_running_loop()
        inner = private_socket_path(os.path.join(self._dir, "private"))
        self._server = grpc.aio.server()
        agent_pb2_grpc.add_AgentAPIServicer_to_server(self.servicer, self._server)
        self._server.add_insecure_port("unix:" + inner)
        await self._server.start()

        async def identify(writer: Any) -> Peer:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            return Peer(x509.load_der_x509_certificate(der) if der else None)

        self._relay = Relay(inner, self.registry, identify)
        self.port = await self._relay.serve_tls("127.0.0.1", 0, self._ssl_context())

    async def stop(self) -> None:
        if self._relay is not None:
            await self._relay.close()
        if self._server is not None:
            await self._server.stop(grace=0)
        shutil.rmtree(self._dir, ignore_errors=True)

    def bundle_pem(self) -> bytes:
        return self.authority.ca.public_bytes(serialization.Encoding.PEM)
