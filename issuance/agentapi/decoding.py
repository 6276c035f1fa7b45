"""The agent API's requests decoded inside the call: a malformed protobuf is INVALID_ARGUMENT.

grpcio decodes a request before the servicer runs, and a decoding error there escapes as
UNKNOWN with a traceback in the log for each malformed message a stranger sends. These
handlers, built from the service descriptor (a new RPC is covered), take the raw bytes and
decode them in the call, answering INVALID_ARGUMENT `malformed_request` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import DecodeError


def add_strictly_decoded(servicer: Any, server: Any, service: ServiceDescriptor) -> None:
    """Serve every method of `service` on `server` by `servicer`'s method of the same name."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        implementation = getattr(servicer, method.name)
        if method.client_streaming:
            if not method.server_streaming:
                raise ValueError(f"{method.full_name}: client-only streams are not served here")
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _bidi(implementation, method.input_type), response_serializer=_serialize
            )
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream(implementation, method.input_type), response_serializer=_serialize
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(implementation, method.input_type), response_serializer=_serialize
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


async def _decode(raw: bytes, request_type: Descriptor, context: Any) -> Any:
    try:
        return message_factory.GetMessageClass(request_type).FromString(raw)
    except DecodeError:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed_request: the request is not a valid {request_type.full_name}",
        )


def _unary(
    implementation: Callable[[Any, Any], Awaitable[Any]], request_type: Descriptor
) -> Callable[[bytes, Any], Awaitable[Any]]:
    async def handle(raw: bytes, context: Any) -> Any:
        return await implementation(await _decode(raw, request_type, context), context)

    return handle


def _stream(
    implementation: Callable[[Any, Any], AsyncIterator[Any]], request_type: Descriptor
) -> Callable[[bytes, Any], AsyncIterator[Any]]:
    async def handle(raw: bytes, context: Any) -> AsyncIterator[Any]:
        request = await _decode(raw, request_type, context)
        async for message in implementation(request, context):
            yield message

    return handle


def _bidi(
    implementation: Callable[[AsyncIterator[Any], Any], AsyncIterator[Any]],
    request_type: Descriptor,
) -> Callable[[AsyncIterator[bytes], Any], AsyncIterator[Any]]:
    async def handle(raw_requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[Any]:
        async def requests() -> AsyncIterator[Any]:
            async for raw in raw_requests:
                yield await _decode(raw, request_type, context)

        async for message in implementation(requests(), context):
            yield message

    return handle
