"""Graceful drain of the agent API: open server streams end so agents reconnect elsewhere.

grpc.aio's `stop(grace)` lets calls in flight finish but keeps a WatchUpdates stream (which
never ends by itself) open until the grace period is over, then cancels it. On a drain this
interceptor ends every open stream at once with UNAVAILABLE `draining`, and refuses new
ones the same way: the agent reopens its stream, on a new connection that the kernel sends to
a peer process or replica still listening. Unary calls are left to `stop(grace)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

DRAINING_DETAIL = "draining: this agent API process is stopping; reconnect"


class StreamDrain(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """`drain()` ends the server streams open now and refuses new ones."""

    def __init__(self) -> None:
        self._draining: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._draining is None:
            self._draining = asyncio.Event()
        return self._draining

    def drain(self) -> None:
        self._event().set()

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_stream is None:
            return handler
        return handler._replace(unary_stream=self._stream(handler.unary_stream))

    def _stream(
        self, behaviour: Callable[[Any, Any], AsyncIterator[Any]]
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            draining = self._event()
            if draining.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_DETAIL)
            messages = behaviour(request, context).__aiter__()
            drained = asyncio.ensure_future(draining.wait())
            following: asyncio.Future[Any] | None = None
            try:
                while True:
                    following = asyncio.ensure_future(messages.__anext__())
                    await asyncio.wait({following, drained}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():  # drained first: the finally cancels the wait
                        await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_DETAIL)
                    try:
                        message = following.result()
                    except StopAsyncIteration:
                        return
                    yield message
            finally:
                drained.cancel()
                # The call ended (drained, cancelled, the client gone) while the stream was
                # waiting for its next message: that wait runs in a task of its own, which the
                # call's cancellation does not reach. Cancel it (a no-op once done), or the
                # stream's body goes on (a WatchUpdates stream re-checking its agent, subscribed
                # to its tenant's changes) and aclose() below fails on a generator still running.
                if following is not None:
                    following.cancel()
                    with contextlib.suppress(BaseException):
                        await following
                with contextlib.suppress(BaseException):
                    await messages.aclose()  # type: ignore[attr-defined]

        return stream
