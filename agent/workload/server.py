"""The SPIFFE Workload API server: the X.509-SVID and JWT-SVID profiles.

The agent accepts workload connections on the public socket itself and serves gRPC on them
(agent.workload.grpcserver, on the h2 state machine): at accept it reads SO_PEERCRED and
records the connecting process (its start time and executable: attestors.workload.process);
each call's context carries that connected process as `caller`, and the servicer attests it
only while it is still that process image.

Waiting instead of failing: when the caller matches entries whose SVIDs the agent has not
minted yet (or the agent has not synced yet), the first response is held back for up to
`svid_wait` seconds (an agent that just started mints within one sync), then the call fails
with UNAVAILABLE, which SPIFFE clients retry with backoff. A caller matching no entry gets
PERMISSION_DENIED at once. Bundles are public material: any caller gets the trust domain's
own bundle; federated bundles only go to callers whose entries federate with them.

JWT-SVIDs come from the agent's cache (agent.jwtcache), minted by the control plane.
ValidateJWTSVID needs no registration entry for the caller (SPIFFE_Workload_API.md 6.2.3 asks
none, and SPIRE serves it to any caller): the token is checked against the trust domain's own
JWT authorities plus the federated bundles of the caller's entries, if it has any.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from typing import Any, NoReturn, TypeAlias

import grpc

from agent.jwtcache import JwtSvidCache, MintedJwt
from agent.state import AgentState, Entry, Snapshot
from agent.workload.grpcserver import (
    CallContext,
    GrpcUnixServer,
    Limits,
    connection_budget,
    method_handlers,
)
from agent.workload.responses import (
    CallerViews,
    Denied,
    Pending,
    claims_struct,
    jwt_bundles_response,
    unique_hint,
    x509_bundles_response,
)
from agent.workload.socketdir import prepare_socket_directory
from attestors.workload import process, unix
from hallmark.bundle import Bundle
from hallmark.errors import HallmarkError
from hallmark.jwtsvid import DEFAULT_LEEWAY, JwtSvidError, verify_jwt_svid
from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc
from hallmark.selectors import Selector
from hallmark.spiffeid import SpiffeId, TrustDomain

SECURITY_HEADER = ("workload.spiffe.io", "true")
_log = logging.getLogger(__name__)
# The part of grpc.aio.ServicerContext the servicer uses, with the connected process.
Context: TypeAlias = CallContext
Attestor: TypeAlias = Callable[[process.ConnectedProcess], Awaitable[frozenset[Selector]]]
BundleMessage: TypeAlias = Callable[[Snapshot, frozenset[Selector]], tuple[Any, bytes | None]]
# The control plane's answers to NewJWTSVID that say "no" rather than "not now".
_JWT_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND: grpc.StatusCode.PERMISSION_DENIED,
}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WorkloadApiServicer(workloadapi_pb2_grpc.SpiffeWorkloadAPIServicer):  # type: ignore[misc,unused-ignore]
    """SpiffeWorkloadAPI over the agent state; callers are attested from kernel credentials."""

    def __init__(
        self,
        state: AgentState,
        attestor: Attestor,
        svid_wait: float,
        jwt_svids: JwtSvidCache | None = None,
    ) -> None:
        self._state = state
        self._attestor = attestor
        self._svid_wait = svid_wait
        self._jwt_svids = jwt_svids
        # Per (snapshot version, selectors): entries, bundles and messages built once.
        self.views = CallerViews()
        self._validated = _ValidatedTokens()

    async def _check_header(self, context: Context) -> None:
        metadata = context.invocation_metadata() or ()
        if not any(k == SECURITY_HEADER[0] and v == SECURITY_HEADER[1] for k, v in metadata):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request"
            )

    async def _attest(self, context: Context) -> frozenset[Selector]:
        try:
            return await self._attestor(context.caller)
        except process.CallerChangedError as exc:
            # Not a passing failure to retry: this connection belongs to another process
            # image now, and only a new connection from the workload itself can be attested.
            _log.warning("workload attestation refused: %s", exc.detail)
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, exc.detail)
        except unix.WorkloadAttestationError as exc:
            _log.warning("workload attestation failed: %s", exc.detail)
            await _abort(
                context, grpc.StatusCode.UNAVAILABLE, f"workload attestation failed: {exc.detail}"
            )

    async def FetchX509SVID(
        self, request: workloadapi_pb2.X509SVIDRequest, context: Context
    ) -> AsyncIterator[workloadapi_pb2.X509SVIDResponse]:
        await self._check_header(context)
        selectors = await self._attest(context)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._svid_wait
        snapshot = self._state.snapshot
        last: bytes | None = None
        while True:
            result, encoded = self.views.x509(snapshot, selectors, _utcnow())
            if isinstance(result, Denied):
                await _abort(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
            if isinstance(result, Pending) and last is None and loop.time() >= deadline:
                await _abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    "x509_svid_pending: the agent holds no SVID for this workload yet; retry",
                )
            if isinstance(result, workloadapi_pb2.X509SVIDResponse):
                if encoded != last:
                    last = encoded
                    yield result
            timeout = max(deadline - loop.time(), 0.01) if last is None else None
            snapshot = await self._state.wait_for_change(snapshot.version, timeout)

    async def FetchX509Bundles(
        self, request: workloadapi_pb2.X509BundlesRequest, context: Context
    ) -> AsyncIterator[workloadapi_pb2.X509BundlesResponse]:
        def build(snapshot: Snapshot, selectors: frozenset[Selector]) -> tuple[Any, bytes | None]:
            def message() -> Any:
                bundles = self.views.bundles(snapshot, selectors)
                return None if bundles is None else x509_bundles_response(bundles)

            return self.views.message("x509_bundles", snapshot, selectors, message)

        async for message in self._bundle_stream(context, build):
            yield message

    async def FetchJWTBundles(
        self, request: workloadapi_pb2.JWTBundlesRequest, context: Context
    ) -> AsyncIterator[workloadapi_pb2.JWTBundlesResponse]:
        def build(snapshot: Snapshot, selectors: frozenset[Selector]) -> tuple[Any, bytes | None]:
            def message() -> Any:
                bundles = self.views.bundles(snapshot, selectors)
                if bundles is None or snapshot.bundle is None:
                    return None
                return jwt_bundles_response(bundles, snapshot.bundle.trust_domain.name)

            return self.views.message("jwt_bundles", snapshot, selectors, message)

        async for message in self._bundle_stream(context, build):
            yield message

    async def _bundle_stream(self, context: Context, build: BundleMessage) -> AsyncIterator[Any]:
        """First message as soon as the agent has a bundle, then one per change."""
        await self._check_header(context)
        selectors = await self._attest(context)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._svid_wait
        snapshot = self._state.snapshot
        last: bytes | None = None
        while True:
            result, encoded = build(snapshot, selectors)
            if result is None and last is None and loop.time() >= deadline:
                await _abort(context, grpc.StatusCode.UNAVAILABLE, "agent_not_ready: no bundle yet")
            if result is not None:
                if encoded != last:
                    last = encoded
                    yield result
            timeout = max(deadline - loop.time(), 0.01) if last is None else None
            snapshot = await self._state.wait_for_change(snapshot.version, timeout)

    async def _ready_snapshot(self, context: Context) -> Snapshot:
        """The snapshot once the agent has synced (waiting up to `svid_wait`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._svid_wait
        snapshot = self._state.snapshot
        while not snapshot.ready:
            if loop.time() >= deadline:
                await _abort(context, grpc.StatusCode.UNAVAILABLE, "agent_not_ready: retry")
            snapshot = await self._state.wait_for_change(
                snapshot.version, max(deadline - loop.time(), 0.01)
            )
        return snapshot

    async def FetchJWTSVID(
        self, request: workloadapi_pb2.JWTSVIDRequest, context: Context
    ) -> workloadapi_pb2.JWTSVIDResponse:
        await self._check_header(context)
        audience = list(request.audience)
        if not audience or not all(audience):
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "jwt_invalid_request: audience is required (one or more non-empty values)",
            )
        requested: SpiffeId | None = None
        if request.spiffe_id:
            try:
                requested = SpiffeId.parse(request.spiffe_id)
            except HallmarkError as exc:
                await _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid spiffe_id: {exc.detail}"
                )
        selectors = await self._attest(context)
        snapshot = await self._ready_snapshot(context)
        entries = self.views.entries(snapshot, selectors)
        if not entries:
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        if requested is not None:
            entries = [e for e in entries if e.spiffe_id == requested]
            if not entries:
                await _abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"no identity issued for {requested}",
                )
        if self._jwt_svids is None:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "jwt_svids_unavailable: retry")
        # One token per SPIFFE ID: entries sharing an ID (other selectors) would mint twins.
        chosen: dict[SpiffeId, Entry] = {}
        for entry in entries:
            chosen.setdefault(entry.spiffe_id, entry)
        minted = await self._mint(context, self._jwt_svids, list(chosen.values()), audience)
        hints: set[str] = set()
        return workloadapi_pb2.JWTSVIDResponse(
            svids=[
                workloadapi_pb2.JWTSVID(
                    spiffe_id=str(entry.spiffe_id),
                    svid=jwt.token,
                    hint=unique_hint(entry.hint, hints),
                )
                for entry, jwt in zip(chosen.values(), minted, strict=True)
            ]
        )

    async def _mint(
        self, context: Context, cache: JwtSvidCache, entries: list[Entry], audience: list[str]
    ) -> list[MintedJwt]:
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            if len(entries) == 1:
                # Most callers have one identity: awaited here, a cached token costs no task
                # (gather would wrap it in one and wake this call a loop turn later).
                return [await cache.fetch(entries[0], audience)]
            return list(await asyncio.gather(*(cache.fetch(e, audience) for e in entries)))
        except grpc.aio.AioRpcError as exc:
            code = _JWT_REFUSALS.get(exc.code(), grpc.StatusCode.UNAVAILABLE)
            failure = (code, f"jwt_svid_mint_failed: {exc.code().name}: {exc.details()}")
        except (HallmarkError, OSError, AttributeError) as exc:  # AttributeError: no channel yet
            failure = (grpc.StatusCode.UNAVAILABLE, f"jwt_svid_mint_failed: {exc}")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the workload went away: nothing to answer
            # The mint was cancelled under us (its channel closed): the workload still
            # deserves an answer, and UNAVAILABLE tells it to retry.
            failure = (grpc.StatusCode.UNAVAILABLE, "jwt_svid_mint_failed: interrupted; retry")
        _log.warning("%s", failure[1])
        await _abort(context, *failure)

    async def ValidateJWTSVID(
        self, request: workloadapi_pb2.ValidateJWTSVIDRequest, context: Context
    ) -> workloadapi_pb2.ValidateJWTSVIDResponse:
        await self._check_header(context)
        if not request.audience or not request.svid:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "jwt_invalid_request: audience and svid are both required",
            )
        selectors = await self._attest(context)
        snapshot = await self._ready_snapshot(context)
        key = (snapshot.version, selectors, request.svid, request.audience)
        now = _utcnow()
        cached: workloadapi_pb2.ValidateJWTSVIDResponse | None = self._validated.get(key, now)
        if cached is not None:
            return cached
        bundles = self.views.bundles(snapshot, selectors) or {}
        by_domain: dict[TrustDomain, Bundle] = {TrustDomain(n): b for n, b in bundles.items()}
        try:
            jwt = verify_jwt_svid(
                request.svid, audience=request.audience, bundles=by_domain, now=now
            )
        except JwtSvidError as exc:
            # As SPIRE: an invalid token is the caller's bad argument, not a server failure.
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code}: {exc.detail}")
        response = workloadapi_pb2.ValidateJWTSVIDResponse(spiffe_id=str(jwt.spiffe_id))
        claims_struct(response, jwt.claims)
        self._validated.put(key, jwt.claims, response)
        return response

    # WIT-SVID profile (incubating, optional: SPIFFE_Workload_API.md 7). Not supported yet, and
    # the standard requires exactly this answer from a server that does not support it:
    # UNIMPLEMENTED on both RPCs, so clients stop asking. Whether and when Hallmark serves
    # WIT-SVIDs is the lead's decision (issue 3).
    async def FetchWITSVID(self, request: Any, context: Context) -> Any:
        await self._unimplemented(context)

    async def FetchWITBundles(self, request: Any, context: Context) -> Any:
        await self._unimplemented(context)

    async def _unimplemented(self, context: Context) -> None:
        await self._check_header(context)
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "wit_svid_unsupported: this agent serves no WIT-SVIDs"
        )


class _ValidatedTokens:
    """ValidateJWTSVID answers by (snapshot version, selectors, token, audience), until exp.

    Verifying a token is a function of the token, the audience, the caller's bundles (fixed by
    the snapshot version and the selectors) and the time; only a valid token is kept, and only
    until its exp (plus the same leeway verify_jwt_svid allows) is reached.
    """

    def __init__(self, max_size: int = 4096) -> None:
        self._max_size = max_size
        self._held: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable, now: dt.datetime) -> Any:
        held = self._held.get(key)
        if held is None:
            return None
        if now.timestamp() >= held[0]:
            del self._held[key]
            return None
        self._held.move_to_end(key)
        return held[1]

    def put(self, key: Hashable, claims: Mapping[str, Any], response: Any) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return
        self._held[key] = (float(exp) + DEFAULT_LEEWAY.total_seconds(), response)
        while len(self._held) > self._max_size:
            self._held.popitem(last=False)


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class WorkloadApiServer:
    """The Workload API on `socket_path` (world-connectable) over `state`."""

    def __init__(
        self,
        state: AgentState,
        *,
        socket_path: str,
        max_exe_hash_bytes: int = unix.DEFAULT_MAX_EXE_HASH_BYTES,
        svid_wait: float = 10.0,
        jwt_svids: JwtSvidCache | None = None,
        compose_attestor: Callable[[Attestor], Attestor] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self._max_exe_hash_bytes = max_exe_hash_bytes
        # One SHA-256 per executable file (attestors.workload.unix.ExeHashCache).
        self.exe_hashes = unix.ExeHashCache()
        # compose_attestor (attestors.workload.catalog) is given the unix attestation below
        # and returns the attestor the Workload API uses.
        attestor = self._attest if compose_attestor is None else compose_attestor(self._attest)
        self._servicer = WorkloadApiServicer(state, attestor, svid_wait, jwt_svids)
        self._server: GrpcUnixServer | None = None

    async def _attest(self, caller: process.ConnectedProcess) -> frozenset[Selector]:
        # Reading /proc costs microseconds: done on the loop, no thread hop, while the caller's
        # executable digest is cached. A digest to compute (a file read whole) goes to a thread.
        try:
            return process.attest_connected(
                caller,
                max_exe_hash_bytes=self._max_exe_hash_bytes,
                hash_cache=self.exe_hashes,
                may_block=False,
            )
        except unix.WouldBlock:
            pass
        return await asyncio.to_thread(
            process.attest_connected,
            caller,
            max_exe_hash_bytes=self._max_exe_hash_bytes,
            hash_cache=self.exe_hashes,
        )

    async def start(self) -> None:
        prepare_socket_directory(self.socket_path)
        server = GrpcUnixServer(
            method_handlers(
                workloadapi_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server, self._servicer
            ),
            Limits(max_connections=connection_budget()),
        )
        await server.serve_unix(self.socket_path, mode=0o777)
        self._server = server
        _log.info("Workload API listening on unix:%s", self.socket_path)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
