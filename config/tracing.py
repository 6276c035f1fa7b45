"""OpenTelemetry traces over OTLP/HTTP, on when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; otherwise every helper here is a no-op.

Each process kind calls `configure(role)` at start (web: gunicorn's post_worker_init, agent
API: its command, Celery: worker and pool-process init, beat). Spans made here:

- `HTTP <method> <route>` (server): each REST request (config.tracingmiddleware), continuing
  the caller's W3C `traceparent` if it sent one;
- `publish <task>` (producer) and `run <task>` (consumer): a Celery task queued inside a
  span carries `traceparent` in its message headers, so a REST request, or a sweep, and the
  tasks it queued are one trace (config.celerytracing);
- `agentapi/<Method>` (server): each unary agent-API call, continuing the agent's
  `traceparent` metadata (issuance.agentapi.tracing);
- `key_manager <operation>` (client): every key-manager call, a child of whatever asked.

The standard OTEL_* variables apply (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_EXPORTER_OTLP_HEADERS, ..._TIMEOUT, ..._COMPRESSION); service.name defaults to
`hallmark-<role>`. The provider is this module's own, not the global one, so tests can point
a process at a collector and back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

log = logging.getLogger(__name__)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SpanKind = trace.SpanKind
Status = trace.Status
StatusCode = trace.StatusCode

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


def endpoint_from_environment() -> str | None:
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def configure(
    role: str, *, endpoint: str | None = None, exporter: SpanExporter | None = None
) -> bool:
    """Export this process's spans if an endpoint is set (or given); True when tracing is on.

    `endpoint` is the traces URL (`http://collector:4318/v1/traces`); unset, the exporter
    reads the OTEL_EXPORTER_OTLP_* variables itself. Calling it again replaces the provider
    (a forked pool process starts its own).
    """
    global _provider, _tracer  # noqa: PLW0603 - one provider per process
    if exporter is None:
        if endpoint is None and endpoint_from_environment() is None:
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    attributes: dict[str, Any] = {"service.namespace": "hallmark", "hallmark.role": role}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = f"hallmark-{role}"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("hallmark")
    log.info("tracing: %s spans exported over OTLP/HTTP", role)
    return True


def shutdown() -> None:
    """Export what is pending and turn tracing off (process exit; tests)."""
    global _provider, _tracer  # noqa: PLW0603
    provider, _provider, _tracer = _provider, None, trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_millis: int = 10_000) -> bool:
    return _provider.force_flush(timeout_millis) if _provider is not None else True


def enabled() -> bool:
    return _provider is not None


def tracer() -> trace.Tracer:
    return _tracer


def inject(carrier: MutableMapping[str, Any]) -> None:
    """Write the current span's `traceparent` (W3C) into headers or metadata."""
    if _provider is not None:
        propagate.inject(carrier)


def extract(carrier: Mapping[str, Any]) -> otel_context.Context:
    """The caller's context from headers or metadata (empty when none came)."""
    return propagate.extract(carrier)


def current_context() -> otel_context.Context:
    return otel_context.get_current()


@contextmanager
def attached(context: otel_context.Context | None) -> Iterator[None]:
    """Run a block in `context` (carried by hand into a thread pool that does not copy it)."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def current_trace_id() -> str | None:
    """The current span's trace id in hex, for the logs; None outside a recorded span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def mark_failed(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
