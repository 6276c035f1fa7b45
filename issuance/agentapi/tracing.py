"""A grpc.aio interceptor tracing each unary agent-API call (config.tracing), when tracing is on.

The span `agentapi/<Method>` continues the agent's `traceparent` metadata if it sent one; the
ORM threads carry it on (issuance.agentapi.scoped), so the key-manager calls a call makes are
its children. Streams (WatchUpdates, the AttestAgent conversation) are not spans: they last
as long as the agent stays connected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from config import tracing


class AgentApiTracing(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A server span around each unary call."""

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or not tracing.enabled():
            return handler
        method = str(handler_call_details.method).rpartition("/")[2]
        metadata = {
            key: value
            for key, value in (handler_call_details.invocation_metadata or ())
            if key in ("traceparent", "tracestate") and isinstance(value, str)
        }
        return handler._replace(unary_unary=_traced(handler.unary_unary, method, metadata))


def _traced(
    behaviour: Callable[[Any, Any], Awaitable[Any]], method: str, metadata: dict[str, str]
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: Any) -> Any:
        with tracing.tracer().start_as_current_span(
            f"agentapi/{method}",
            context=tracing.extract(metadata),
            kind=tracing.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.method": method},
        ) as span:
            try:
                response = await behaviour(request, context)
            except BaseException:
                # An abort sets the code first; anything else reaches the agent as UNKNOWN.
                code = context.code()
                if not isinstance(code, grpc.StatusCode):
                    code = grpc.StatusCode.UNKNOWN
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                span.set_status(tracing.Status(tracing.StatusCode.ERROR, code.name))
                raise
            code = context.code()
            span.set_attribute(
                "rpc.grpc.status_code",
                (code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK).value[0],
            )
            return response

    return call
