"""Celery's half of tracing (config.tracing): tasks carry the trace they were queued in.

Publishing inside a span (a REST request, a sweep task) makes a `publish <task>` producer span
and writes its `traceparent` into the message headers; the worker runs the task in a
`run <task>` consumer span under it, so what the task does (key-manager calls, tasks it
queues in turn) joins the same trace. Nothing happens when tracing is off.
"""

from __future__ import annotations

from typing import Any

from celery import signals
from opentelemetry import context as otel_context
from opentelemetry import trace

from config import tracing

# Spans open now, by task id: a producer span between before/after publish, a consumer span
# between prerun/postrun (and the context token to detach).
_publishing: dict[str, trace.Span] = {}
_running: dict[str, tuple[trace.Span, object]] = {}


@signals.worker_init.connect
def _worker_tracing(**_: Any) -> None:
    tracing.configure("worker")  # a solo or threaded pool runs tasks in this process


@signals.worker_process_init.connect
def _pool_process_tracing(**_: Any) -> None:
    tracing.configure("worker")  # a forked pool process: a provider (and thread) of its own


@signals.beat_init.connect
def _beat_tracing(**_: Any) -> None:
    tracing.configure("beat")


@signals.before_task_publish.connect
def _publishing_span(
    sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    if not tracing.enabled() or headers is None:
        return
    span = tracing.tracer().start_span(
        f"publish {sender}",
        kind=tracing.SpanKind.PRODUCER,
        attributes={"messaging.system": "celery", "messaging.destination.name": str(sender)},
    )
    with trace.use_span(span, end_on_exit=False):
        tracing.inject(headers)
    _publishing[str(headers.get("id"))] = span


@signals.after_task_publish.connect
def _published(headers: dict[str, Any] | None = None, **_: Any) -> None:
    span = _publishing.pop(str((headers or {}).get("id")), None)
    if span is not None:
        span.end()


@signals.task_prerun.connect
def _running_span(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if not tracing.enabled() or task_id is None:
        return
    request = getattr(task, "request", None)
    carrier = {"traceparent": getattr(request, "traceparent", None)}
    state = getattr(request, "tracestate", None)
    if state:
        carrier["tracestate"] = state
    name = str(getattr(task, "name", "unknown"))
    span = tracing.tracer().start_span(
        f"run {name}",
        context=tracing.extract({k: v for k, v in carrier.items() if v}),
        kind=tracing.SpanKind.CONSUMER,
        attributes={"messaging.system": "celery", "messaging.destination.name": name},
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    _running[task_id] = (span, token)


@signals.task_postrun.connect
def _ran(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    found = _running.pop(task_id, None) if task_id is not None else None
    if found is None:
        return
    span, token = found
    if state == "FAILURE":
        span.set_status(tracing.Status(tracing.StatusCode.ERROR))
    span.end()
    otel_context.detach(token)  # type: ignore[arg-type]
