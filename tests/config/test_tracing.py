"""OpenTelemetry traces, exported over OTLP/HTTP to a fake collector that decodes the protobuf:
REST requests, Celery publish → run, agent-API calls → key-manager calls, one trace each."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from config import logcontext, tracing
from config.celery import app
from tests.celeryworker import real_worker
from tests.fakes.otlp import OtlpCollector, ReceivedSpan


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as running:
        assert tracing.configure("test", endpoint=running.endpoint)
        try:
            yield running
        finally:
            tracing.shutdown()


def traceparent() -> tuple[str, str, str]:
    """A caller's W3C traceparent header and its trace and span ids."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def exported(collector: OtlpCollector, prefix: str, count: int = 1) -> list[ReceivedSpan]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tracing.force_flush()
        found = collector.named(prefix)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {count} span(s) {prefix!r}: {[s.name for s in collector.spans]}")


def test_tracing_is_off_without_an_endpoint(monkeypatch) -> None:
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure("test") is False
    assert not tracing.enabled()
    with tracing.tracer().start_as_current_span("nothing"):
        assert tracing.current_trace_id() is None


def test_the_exporter_follows_the_standard_endpoint_variable(monkeypatch) -> None:
    with OtlpCollector() as running:
        base = running.endpoint.removesuffix("/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
        try:
            assert tracing.configure("test")
            with tracing.tracer().start_as_current_span("from the environment"):
                pass
            (span,) = exported(running, "from the environment")
        finally:
            tracing.shutdown()
    assert span.service == "hallmark-test"


@pytest.mark.django_db
def test_a_rest_request_continues_the_callers_trace(collector, tenant_a) -> None:
    header, trace_id, parent = traceparent()

    answer = tenant_a.client.get("/api/v1/entries", HTTP_TRACEPARENT=header)
    assert answer.status_code == 200
    tenant_a.client.get(f"/api/v1/entries/{uuid.uuid4()}")  # no traceparent: a trace of its own

    spans = {
        span.attributes["http.response.status_code"]: span
        for span in exported(collector, "HTTP GET api/v1/entries", 2)
    }
    continued, fresh = spans[200], spans[404]
    assert (continued.trace_id, continued.parent_span_id) == (trace_id, parent)
    assert continued.kind == Span.SPAN_KIND_SERVER and continued.service == "hallmark-test"
    assert continued.attributes["http.route"] == "api/v1/entries$"
    assert fresh.trace_id != trace_id and fresh.parent_span_id == ""
    assert str(uuid.UUID(int=0))[:8] not in fresh.name  # the route, never the path


def test_a_task_runs_in_the_trace_it_was_queued_in(collector) -> None:
    # given a real worker (Redis broker) consuming a queue of this test's own
    queue = f"traced-{uuid.uuid4().hex[:8]}"
    with real_worker(app, queues=[queue]):
        # when a task is queued inside a span (as a REST request or a sweep would)
        with tracing.tracer().start_as_current_span("queueing request") as parent:
            app.send_task("trustdomains.tasks.rotate_trust_domains", args=([],), queue=queue)
        (ran,) = exported(collector, "run trustdomains.tasks.rotate_trust_domains")

    # then publish and run are one trace under the queueing span
    (published,) = collector.named("publish trustdomains.tasks.rotate_trust_domains")
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert {published.trace_id, ran.trace_id} == {trace_id}
    assert published.parent_span_id == format(parent.get_span_context().span_id, "016x")
    assert ran.parent_span_id == published.span_id
    assert (published.kind, ran.kind) == (Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER)


@pytest.mark.django_db(transaction=True)
def test_an_agent_api_call_and_its_key_manager_signature_are_one_trace(collector, tenant_a) -> None:
    from tests.issuance.agent_steps import attested
    from tests.issuance.agentapi_harness import running_server

    with running_server() as agent_api:
        # given an attested agent whose renewal carries its own traceparent
        _, _, client = attested(agent_api, tenant_a)
        header, trace_id, parent = traceparent()
        client.metadata = (*client.metadata, ("traceparent", header))

        # when it renews its SVID (signed by the tenant's key manager in an ORM thread)
        try:
            assert client.renew(ec.generate_private_key(ec.SECP256R1())).svid_chain
        finally:
            client.close()

    # then the call's span continues the agent's trace and the signature is its child
    (call,) = exported(collector, "agentapi/RenewAgent")
    signs = [s for s in exported(collector, "key_manager sign") if s.trace_id == trace_id]
    assert (call.trace_id, call.parent_span_id, call.kind) == (
        trace_id,
        parent,
        Span.SPAN_KIND_SERVER,
    )
    assert [s.parent_span_id for s in signs] == [call.span_id]
    assert signs[0].kind == Span.SPAN_KIND_CLIENT
    assert signs[0].attributes["hallmark.key_manager.kind"] in ("vault", "pkcs11")
    assert call.attributes["rpc.grpc.status_code"] == 0


def test_a_json_log_line_inside_a_span_carries_its_trace_id(collector) -> None:
    record = logging.LogRecord("hallmark.test", logging.INFO, __file__, 1, "inside", None, None)
    with tracing.tracer().start_as_current_span("logged") as span:
        inside = json.loads(logcontext.JsonFormatter().format(record))
    outside = json.loads(logcontext.JsonFormatter().format(record))
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in outside
