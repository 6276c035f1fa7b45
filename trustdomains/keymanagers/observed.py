"""Every key-manager call timed and its failures counted, by backend kind and operation,
and traced (a `key_manager <operation>` span) when tracing is on.

The backends' public methods wear `@observed("operation")`; the labels come from closed sets
(the backend's `name`, the operation, the error's stable code), never from a key or tenant.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ParamSpec, TypeVar

from config import metrics, tracing
from hallmark.errors import HallmarkError

P = ParamSpec("P")
T = TypeVar("T")


def _span(kind: str, operation: str) -> AbstractContextManager[Any]:
    """A client span under whatever asked (an agent-API call, a task), if tracing is on."""
    if not tracing.enabled():
        return nullcontext()
    return tracing.tracer().start_as_current_span(
        f"key_manager {operation}",
        kind=tracing.SpanKind.CLIENT,
        attributes={"hallmark.key_manager.kind": kind, "hallmark.key_manager.operation": operation},
    )


def observed(operation: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Time the decorated key-manager method and count its failures under `operation`."""

    def decorate(method: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(method)
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            manager: Any = args[0]
            kind = str(getattr(manager, "name", "unknown"))
            span = _span(kind, operation)
            started = time.perf_counter()
            try:
                with span:
                    return method(*args, **kwargs)
            except Exception as exc:
                code = exc.code if isinstance(exc, HallmarkError) else "error"
                metrics.KEY_MANAGER_ERRORS.labels(kind, operation, code).inc()
                raise
            finally:
                elapsed = time.perf_counter() - started
                metrics.KEY_MANAGER_LATENCY.labels(kind, operation).observe(elapsed)

        return timed

    return decorate
