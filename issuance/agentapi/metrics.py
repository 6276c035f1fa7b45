"""A grpc.aio interceptor recording the agent API's calls, streams, SVIDs and attestations.

It sees every call the server routes: unknown methods never reach it (grpc answers
UNIMPLEMENTED first), so the method label is one of the service's own names. Requests reach
the handlers as raw bytes (issuance.agentapi.decoding); the interceptor decodes an
AttestAgent request itself, only to read the attestor type for its label. Each call also
runs with its tenant and a request id bound for the logs (config.logcontext).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from config import logcontext, metrics
from hallmark.protos import agent_pb2

# Attestor types a label may carry (DESIGN: SPIRE's node attestors); anything else is "other",
# so a stranger cannot grow the label set by naming types.
ATTESTOR_TYPES = frozenset(
    {
        "join_token",
        "x509pop",
        "k8s_psat",
        "k8s_sat",
        "aws_iid",
        "gcp_iit",
        "azure_msi",
        "sshpop",
        "tpm_devid",
    }
)
SAMPLE_SECONDS = 2.0


def _code_of(context: Any, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _code_label(code: grpc.StatusCode) -> str:
    return str(code.name)


def attestor_type(raw: Any) -> str:
    try:
        request = agent_pb2.AttestAgentRequest.FromString(bytes(raw))
    except (DecodeError, TypeError):
        return "other"
    name = str(request.attestation_type)
    return name if name in ATTESTOR_TYPES else "other"


def _count_minted(method: str, response: Any) -> None:
    if method == "RenewAgent":  # AttestAgent is a conversation: counted by _bidi
        metrics.SVIDS_MINTED.labels("x509_agent").inc()
    elif method == "NewJWTSVID":
        metrics.SVIDS_MINTED.labels("jwt_workload").inc()
    elif method == "BatchNewX509SVID":
        minted = sum(1 for result in response.results if result.svid_chain)
        if minted:
            metrics.SVIDS_MINTED.labels("x509_workload").inc(minted)


class AgentApiMetrics(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times calls by method and code; samples connected agents while serving."""

    def __init__(self, peers: Any = None) -> None:
        # The server's PeerRegistry: its length is the agents connected now, and it names the
        # tenant of a call's connection.
        self._peers = peers
        self._sampler: asyncio.Task[None] | None = None

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        self._start_sampling()
        method = str(handler_call_details.method).rpartition("/")[2]
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._bidi(handler.stream_stream, method))
        return handler

    def _unary(
        self, behaviour: Callable[[Any, Any], Awaitable[Any]], method: str
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def call(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                with self._log_context(context):
                    response = await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = _code_of(context, error)
                metrics.RPC_CALLS.labels(method, _code_label(code)).inc()
                metrics.RPC_LATENCY.labels(method).observe(time.perf_counter() - started)
            if code == grpc.StatusCode.OK:
                _count_minted(method, response)
            return response

        return call

    def _stream(
        self, behaviour: Callable[[Any, Any], AsyncIterator[Any]], method: str
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            error: BaseException | None = None
            metrics.RPC_STREAMS_OPEN.labels(method).inc()
            try:
                with self._log_context(context):
                    async for message in behaviour(request, context):
                        metrics.RPC_STREAM_MESSAGES.labels(method).inc()
                        yield message
            except BaseException as exc:
                error = exc
                raise
            finally:
                metrics.RPC_STREAMS_OPEN.labels(method).dec()
                metrics.RPC_CALLS.labels(method, _code_label(_code_of(context, error))).inc()

        return stream

    def _bidi(
        self, behaviour: Callable[[Any, Any], AsyncIterator[Any]], method: str
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        """A conversation (AttestAgent: payload, challenge, answer): counted once, at its end.

        The attestor type for the label is read from the conversation's first message.
        """

        async def conversation(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            first: list[Any] = []

            async def watched() -> AsyncIterator[Any]:
                async for raw in requests:
                    if not first:
                        first.append(raw)
                    yield raw

            started = time.perf_counter()
            error: BaseException | None = None
            metrics.RPC_STREAMS_OPEN.labels(method).inc()
            try:
                with self._log_context(context):
                    async for message in behaviour(watched(), context):
                        metrics.RPC_STREAM_MESSAGES.labels(method).inc()
                        yield message
            except BaseException as exc:
                error = exc
                raise
            finally:
                metrics.RPC_STREAMS_OPEN.labels(method).dec()
                code = _code_of(context, error)
                metrics.RPC_CALLS.labels(method, _code_label(code)).inc()
                metrics.RPC_LATENCY.labels(method).observe(time.perf_counter() - started)
                if method == "AttestAgent":
                    outcome = "ok" if code == grpc.StatusCode.OK else code.name.lower()
                    kind = attestor_type(first[0]) if first else "other"
                    metrics.ATTESTATIONS.labels(kind, outcome).inc()
                    if code == grpc.StatusCode.OK:
                        metrics.SVIDS_MINTED.labels("x509_agent").inc()

        return conversation

    def _log_context(self, context: Any) -> contextlib.AbstractContextManager[None]:
        peer = self._peers.lookup(context.peer()) if self._peers is not None else None
        tenant = str(peer.tenant_id) if peer is not None else None
        return logcontext.bound(tenant=tenant, request_id=uuid.uuid4().hex[:16])

    def _start_sampling(self) -> None:
        if self._peers is None or self._sampler is not None:
            return
        self._sampler = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                metrics.AGENT_CONNECTIONS.set(len(self._peers))
                await asyncio.sleep(SAMPLE_SECONDS)
