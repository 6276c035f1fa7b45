"""The agent's main loop: attest, then keep the bundle, entries and SVIDs in sync.

Push first: one WatchUpdates stream stays open (reopened with backoff); a notice newer than
what the agent holds triggers at once an incremental entry sync (and a bundle fetch when the
bundle sequence moved or `resync` is set), SVIDs are minted for new and changed entries
(BatchNewX509SVID, keys generated here) and the new state is published to the Workload API
streams. Every `sync_interval` seconds the agent renews its own SVID and workload SVIDs past
half-life; every `resync_interval` seconds it fetches the bundle and syncs entries anyway, the
safety net for a lost notice. SVIDs and cached JWT-SVIDs of removed entries go at once.
When the bundle lists tainted authorities, everything they signed is replaced at once (after
a random delay of up to `taint_jitter` seconds): the agent's SVID by RenewAgent, workload
X.509-SVIDs by BatchNewX509SVID (the old one is served until its replacement arrives, then
published to open streams); cached JWT-SVIDs with a tainted `kid` are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Iterable, Mapping

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from agent.client import DEFAULT_PAGE_SIZE, AgentClient, Attestation, UpdateNotice
from agent.config import AgentConfig
from agent.entrysync import sync_entries
from agent.jwtcache import JwtSvidCache, MintedJwt
from agent.state import AgentState, Entry, EntrySvid, X509Svid
from agent.store import load_saved, save_bundle, save_svid
from agent.taint import Taint
from agent.trust import BootstrapError, InsecureTunnel, fetch_bundle_url, load_bundle_file
from attestors.node.base import AgentAttestor
from attestors.node.catalog import agent_attestor
from attestors.node.join_token import JoinTokenAgent
from hallmark.bundle import Bundle
from hallmark.errors import HallmarkError
from hallmark.spiffeid import SpiffeId
from hallmark.x509svid import make_csr, spiffe_id_of, utcnow, verify_x509_svid

_log = logging.getLogger("hallmark.agent")
BATCH_SIZE = 100
MAX_BACKOFF = 60.0  # between attestation attempts
# Between sync attempts and update-stream reopenings while the agent API cannot be reached:
# an agent is back within ~10 s of the plane's return (SPIRE's agents retry every 5 s), each
# wait jittered by +-20% so that a fleet that lost the plane together does not return together.
MAX_SYNC_BACKOFF = 10.0
MAX_WATCH_BACKOFF = 10.0
_SYNC_ERRORS = (grpc.aio.AioRpcError, HallmarkError, OSError)
# A renewal refused so: the agent's SVID no longer counts (evicted, superseded); re-attest.
_REATTEST_CODES = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
# gRPC codes after which retrying the same join token cannot succeed.
_FATAL_ATTEST_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.NOT_FOUND,
}


class AgentError(HallmarkError):
    """The agent cannot go on; the message says what the operator must do."""

    code = "agent_failed"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _same_key(svid_chain: Iterable[object], key: ec.EllipticCurvePrivateKey) -> bool:
    leaf = next(iter(svid_chain), None)
    public = getattr(leaf, "public_key", None)
    return public is not None and public() == key.public_key()


def jittered(seconds: float) -> float:
    """`seconds` give or take 20%."""
    return seconds * random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not a secret


def _rpc_text(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def _serials(svids: Mapping[str, EntrySvid]) -> dict[str, int]:
    return {k: v.svid.leaf.serial_number for k, v in svids.items()}


def _documents(bundles: Mapping[str, Bundle]) -> dict[str, bytes]:
    return {name: bundle.to_json() for name, bundle in bundles.items()}


class AgentManager:
    """Owns the agent SVID and drives the sync loop that feeds `AgentState`."""

    def __init__(self, config: AgentConfig, state: AgentState) -> None:
        self._config = config
        self._state = state
        self._client = AgentClient(
            config.server.target,
            config.trust_domain,
            tunnel_dir=os.path.join(config.data_dir, "agentapi"),
        )
        self._svid: X509Svid | None = None
        self._bundle: Bundle | None = None
        self._federated: dict[str, Bundle] = {}
        self._taint = Taint()
        self._entries: dict[str, Entry] = {}
        self._revision = 0
        self._entries_synced = False
        # What the latest push notice said the server holds.
        self._notice_revision = 0
        self._notice_sequence = 0
        self._resync_requested = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.agent_id: SpiffeId | None = None
        self.jwt_cache = JwtSvidCache(self._mint_jwt)
        self.page_size = DEFAULT_PAGE_SIZE
        self.notices = 0

    @property
    def revision(self) -> int:
        """The entry revision the agent holds."""
        return self._revision

    async def run(self) -> None:
        """Bootstrap, then follow pushes and resync periodically (until cancelled)."""
        await self.bootstrap()
        watcher = asyncio.ensure_future(self.watch())
        try:
            await self._sync_loop()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self._client.close()

    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time()  # the first round is a resync
        backoff = 1.0
        while True:
            self._wake.clear()
            now = loop.time()
            periodic = now >= next_resync
            resync, self._resync_requested = self._resync_requested, False
            assert self._bundle is not None
            want_entries = periodic or resync or self._notice_revision > self._revision
            want_bundle = periodic or resync or self._notice_sequence > self._bundle.sequence
            try:
                await self._sync(bundle=want_bundle, entries=want_entries)
                if periodic:
                    next_resync = now + self._config.resync_interval
                backoff = 1.0
                timeout = min(next_resync, now + self._config.sync_interval) - loop.time()
            except _SYNC_ERRORS as exc:
                if isinstance(exc, AgentError):
                    raise
                self._resync_requested = self._resync_requested or resync
                text = _rpc_text(exc) if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                timeout = jittered(backoff)
                _log.warning("sync failed (%s); retrying in %.1fs", text, timeout)
                backoff = min(backoff * 2, MAX_SYNC_BACKOFF)
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # arrives just as the event is set, and the agent would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._wake.wait()

    async def watch(self) -> None:
        """Keep one WatchUpdates stream open; each notice may wake the sync loop."""
        backoff = 0.5
        while True:
            try:
                async for notice in self._client.watch_updates():
                    backoff = 0.5
                    self.on_notice(notice)
                _log.info("update stream ended; reopening")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the watcher itself is being stopped
                # grpc.aio cancels open calls when their channel closes: `configure` rebuilt it
                # for a new bundle or agent SVID. Reopen on the new channel.
                _log.debug("update stream cancelled with its channel; reopening")
            except Exception as exc:  # noqa: BLE001 (any failure: reopen; the resync is the net)
                # e.g. the channel was rebuilt for a new agent SVID or bundle, or the server went.
                text = _rpc_text(exc) if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
                _log.debug("update stream broke (%s); reopening in %.1fs", text, backoff)
            await asyncio.sleep(jittered(backoff))
            backoff = min(backoff * 2, MAX_WATCH_BACKOFF)

    def on_notice(self, notice: UpdateNotice) -> None:
        """Record what the server holds; wake the sync loop if the agent is behind."""
        self.notices += 1
        self._notice_revision = max(self._notice_revision, notice.entries_revision)
        self._notice_sequence = max(self._notice_sequence, notice.bundle_sequence)
        self._resync_requested = self._resync_requested or notice.resync
        held_sequence = self._bundle.sequence if self._bundle is not None else 0
        if (
            notice.resync
            or notice.entries_revision > self._revision
            or notice.bundle_sequence > held_sequence
        ):
            _log.info(
                "notice: server at entries revision %d, bundle sequence %d%s (held %d, %d)",
                notice.entries_revision,
                notice.bundle_sequence,
                ", resync" if notice.resync else "",
                self._revision,
                held_sequence,
            )
            self._wake.set()

    async def bootstrap(self) -> None:
        """Resume from the data dir, or attest with the join token."""
        config = self._config
        saved = load_saved(config.data_dir, config.trust_domain)
        if saved is not None and self._usable(saved.svid, saved.bundle):
            self._svid, self._bundle = saved.svid, saved.bundle
            self.agent_id = spiffe_id_of(saved.svid.leaf)
            _log.info("resuming as %s (SVID valid until %s)", self.agent_id, saved.svid.not_after)
        else:
            if saved is not None:
                _log.warning("saved agent SVID in %s is expired or invalid", config.data_dir)
            attestation = await self._attest_with_retries()
            self.agent_id = attestation.spiffe_id
            _log.info(
                "attested as %s (SVID valid until %s)",
                attestation.spiffe_id,
                attestation.chain[0].not_valid_after_utc,
            )
        assert self._bundle is not None
        await self._client.configure(self._bundle, self._svid)
        await self._state.publish(bundle=self._bundle)

    def _usable(self, svid: X509Svid, bundle: Bundle) -> bool:
        try:
            spiffe_id = verify_x509_svid(svid.chain, bundle.x509_authorities)
        except HallmarkError:
            return False
        return (
            spiffe_id.trust_domain == self._config.trust_domain
            and svid.not_after > utcnow()
            and _same_key(svid.chain, svid.private_key)
        )

    def _node_attestor(self) -> AgentAttestor:
        """The configured node attestor: the join token, or a `[node_attestor.<type>]` table."""
        config = self._config
        if config.join_token:
            return JoinTokenAgent(config.join_token)
        if config.node_attestor:
            ((kind, settings),) = config.node_attestor.items()
            try:
                return agent_attestor(kind, settings)
            except (HallmarkError, OSError, ValueError) as exc:
                raise AgentError(f"[node_attestor.{kind}]: {exc}") from None
        raise AgentError(
            f"no agent SVID saved in {config.data_dir} and no node attestor: create a "
            "join token (POST /api/v1/join-tokens) and pass it with --join-token-file, "
            "HALLMARK_JOIN_TOKEN or --join-token, or configure [node_attestor.<type>] in the "
            "agent's TOML file"
        )

    async def _attest_with_retries(self) -> Attestation:
        config = self._config
        attestor = self._node_attestor()
        backoff = 1.0
        while True:
            try:
                return await self._attest(attestor)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _FATAL_ATTEST_CODES:
                    raise AgentError(f"attestation refused: {_rpc_text(exc)}") from None
                _log.warning("attestation failed (%s); retrying in %.0fs", _rpc_text(exc), backoff)
            except BootstrapError as exc:
                if not config.trust_bundle_url:
                    raise
                _log.warning("%s; retrying in %.0fs", exc.detail, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _attest(self, token: AgentAttestor) -> Attestation:
        config = self._config
        key = _new_key()
        csr = make_csr(key)
        tunnel: InsecureTunnel | None = None
        if config.insecure_bootstrap and not config.trust_bundle_url:
            _log.warning(
                "INSECURE BOOTSTRAP: the server %s is NOT verified for this first attestation; "
                "anyone on the path can impersonate it and steal the join token. Use "
                "--trust-bundle or --trust-bundle-url outside development.",
                config.server,
            )
            tunnel = InsecureTunnel(
                config.server.host, config.server.port, config.trust_domain, config.data_dir
            )
            async with tunnel:
                self._client.use_insecure_unix(tunnel.path)
                try:
                    attestation = await self._client.attest(token, csr)
                finally:
                    await self._client.close()
            self._check_server_certificate(tunnel, attestation.bundle)
        else:
            if config.trust_bundle:
                bundle = load_bundle_file(config.trust_domain, config.trust_bundle)
            else:
                assert config.trust_bundle_url is not None
                if config.trust_bundle_url.startswith("http://"):
                    _log.warning(
                        "INSECURE BOOTSTRAP: the bundle comes over plain http from %s; anyone "
                        "on the path can replace it. Use an https:// URL outside development.",
                        config.trust_bundle_url,
                    )
                bundle = await asyncio.to_thread(
                    fetch_bundle_url, config.trust_domain, config.trust_bundle_url
                )
            await self._client.configure(bundle, None)
            attestation = await self._client.attest(token, csr)
        svid = X509Svid(attestation.chain, key)
        self._check_svid(svid, attestation.bundle, attestation.spiffe_id)
        save_bundle(config.data_dir, attestation.bundle)
        save_svid(config.data_dir, svid)
        self._svid, self._bundle = svid, attestation.bundle
        return attestation

    def _check_server_certificate(self, tunnel: InsecureTunnel, bundle: Bundle) -> None:
        cert = tunnel.server_certificate
        for authority in bundle.x509_authorities:
            try:
                if cert is not None:
                    cert.verify_directly_issued_by(authority)
                    return
            except (ValueError, TypeError, InvalidSignature):
                continue
        _log.warning(
            "insecure bootstrap: the server's certificate is not signed by the bundle it sent"
        )

    def _check_svid(self, svid: X509Svid, bundle: Bundle, expected: SpiffeId | None) -> None:
        try:
            spiffe_id = verify_x509_svid(svid.chain, bundle.x509_authorities)
        except HallmarkError as exc:
            raise AgentError(f"the server sent an agent SVID that does not verify: {exc}") from None
        if expected is not None and spiffe_id != expected:
            raise AgentError(f"the server sent an SVID for {spiffe_id}, expected {expected}")
        if not _same_key(svid.chain, svid.private_key):
            raise AgentError("the server sent an agent SVID for another key")

    async def sync_once(self) -> None:
        """One full round: renew if due, bundle, entries (incremental), SVIDs; publish."""
        await self._sync(bundle=True, entries=True)

    async def _sync(self, *, bundle: bool, entries: bool) -> None:
        async with self._lock:
            assert self._svid is not None and self._bundle is not None
            if utcnow() >= self._svid.renew_at:
                await self._renew()
            bundles_changed = await self._refresh_bundles() if bundle else False
            await self._replace_tainted_agent_svid()
            if entries:
                result = await sync_entries(
                    self._client, self._entries, self._revision, self.page_size
                )
                if result.full or result.changed or result.removed:
                    _log.info(
                        "entries at revision %d: %d changed, %d removed%s (%d page(s))",
                        result.revision,
                        result.changed,
                        result.removed,
                        ", full replacement" if result.full else "",
                        result.pages,
                    )
                self._entries, self._revision = result.entries, result.revision
                self._entries_synced = True
                self.jwt_cache.retain(self._entries)
            if not self._entries_synced:
                return
            snapshot = self._state.snapshot
            svids = await self._mint(self._entries, dict(snapshot.svids))
            changed = (
                bundles_changed
                or not snapshot.ready
                or dict(snapshot.entries) != self._entries
                or _serials(snapshot.svids) != _serials(svids)
            )
            if changed:
                await self._state.publish(
                    bundle=self._bundle,
                    entries=self._entries,
                    svids=svids,
                    federated_bundles=self._federated,
                    ready=True,
                )
                _log.info("published: %d entries, %d SVIDs", len(self._entries), len(svids))

    async def _refresh_bundles(self) -> bool:
        assert self._bundle is not None
        fetched = await self._client.fetch_bundle()
        bundle = fetched.bundle
        changed = False
        if bundle.to_json() != self._bundle.to_json():
            _log.info("bundle updated (sequence %d)", bundle.sequence)
            save_bundle(self._config.data_dir, bundle)
            self._bundle = bundle
            await self._client.configure(bundle, self._svid)
            changed = True
        if fetched.taint != self._taint:
            self._taint = fetched.taint
            dropped = self.jwt_cache.taint(fetched.taint.jwt_key_ids)
            _log.warning(
                "tainted authorities: %d X.509, JWT key ids %s (%d cached JWT-SVIDs dropped)",
                len(fetched.taint.x509_authorities),
                ", ".join(sorted(fetched.taint.jwt_key_ids)) or "none",
                dropped,
            )
        if _documents(fetched.federated) != _documents(self._federated):
            _log.info("federated bundles: %s", ", ".join(sorted(fetched.federated)) or "none")
            self._federated = dict(fetched.federated)
            changed = True
        return changed

    @property
    def taint(self) -> Taint:
        """The tainted authorities the latest bundle fetch listed."""
        return self._taint

    async def _replace_tainted_agent_svid(self) -> None:
        """Wait a jitter if anything held is tainted, then renew the agent SVID if it is."""
        assert self._svid is not None
        if not self._taint.x509_authorities:
            return
        agent_tainted = self._taint.signed(self._svid.chain)
        held = self._state.snapshot.svids.values()
        if agent_tainted or any(self._taint.signed(h.svid.chain) for h in held):
            await asyncio.sleep(random.uniform(0, self._config.taint_jitter))  # noqa: S311
        if agent_tainted:
            _log.warning("the agent SVID was signed by a tainted authority; renewing it now")
            await self._renew()

    async def _mint_jwt(self, entry_id: str, audience: tuple[str, ...]) -> MintedJwt:
        return await self._client.new_jwt_svid(entry_id, audience)

    async def _mint(
        self, entries: dict[str, Entry], svids: dict[str, EntrySvid]
    ) -> dict[str, EntrySvid]:
        now = utcnow()
        kept = {
            entry_id: held
            for entry_id, held in svids.items()
            if entry_id in entries and held.revision == entries[entry_id].revision
        }
        due = [
            e
            for e in entries.values()
            if e.id not in kept
            or now >= kept[e.id].svid.renew_at
            or self._taint.signed(kept[e.id].svid.chain)
        ]
        for start in range(0, len(due), BATCH_SIZE):
            batch = due[start : start + BATCH_SIZE]
            keys = {e.id: _new_key() for e in batch}
            results = await self._client.batch_new_x509_svid(
                {entry_id: make_csr(key) for entry_id, key in keys.items()}
            )
            for result in results:
                entry = entries.get(result.entry_id)
                key = keys.get(result.entry_id)
                if entry is None or key is None:
                    continue
                if result.error_code or not result.chain:
                    _log.warning(
                        "no SVID for entry %s (%s): %s %s",
                        entry.id,
                        entry.spiffe_id,
                        result.error_code,
                        result.error,
                    )
                    continue
                svid = X509Svid(result.chain, key)
                if not _same_key(svid.chain, key):
                    _log.warning("server returned an SVID for another key for entry %s", entry.id)
                    continue
                kept[entry.id] = EntrySvid(entry.id, entry.revision, svid)
                _log.info("SVID for %s valid until %s", entry.spiffe_id, svid.not_after)
        return kept

    async def _renew(self) -> None:
        assert self._svid is not None and self._bundle is not None
        if utcnow() >= self._svid.not_after:
            if self._config.join_token or not self._config.node_attestor:
                raise AgentError(
                    f"the agent SVID expired at {self._svid.not_after}; remove the agent files "
                    f"in {self._config.data_dir} and attest again with a new join token"
                )
            await self._reattest("the agent SVID expired")
            return
        try:
            await self._renew_svid()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _REATTEST_CODES or self._config.join_token:
                raise
            if not self._config.node_attestor:
                raise
            await self._reattest(f"renewal refused ({_rpc_text(exc)})")

    async def _reattest(self, why: str) -> None:
        """SPIRE's re-attestation: prove the node again (not with join tokens: single use)."""
        assert self._bundle is not None
        attestor = self._node_attestor()
        if not attestor.can_reattest:
            raise AgentError(f"{why}; {attestor.type} agents cannot re-attest")
        _log.warning("%s; re-attesting with %s", why, attestor.type)
        key = _new_key()
        await self._client.configure(self._bundle, None)
        attestation = await self._client.attest(attestor, make_csr(key))
        svid = X509Svid(attestation.chain, key)
        self._check_svid(svid, attestation.bundle, attestation.spiffe_id)
        save_bundle(self._config.data_dir, attestation.bundle)
        save_svid(self._config.data_dir, svid)
        self._svid, self._bundle = svid, attestation.bundle
        self.agent_id = attestation.spiffe_id
        await self._client.configure(self._bundle, svid)
        _log.info("re-attested as %s (SVID valid until %s)", self.agent_id, svid.not_after)

    async def _renew_svid(self) -> None:
        assert self._svid is not None and self._bundle is not None
        key = _new_key()
        chain = await self._client.renew(make_csr(key))
        svid = X509Svid(chain, key)
        self._check_svid(svid, self._bundle, self.agent_id)
        save_svid(self._config.data_dir, svid)
        self._svid = svid
        await self._client.configure(self._bundle, svid)
        _log.info("agent SVID renewed (valid until %s)", svid.not_after)
