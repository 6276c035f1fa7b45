"""Django middleware counting and timing every HTTP request by route template and status,
and tracing it (a server span) when tracing is on (config.tracing)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from config import metrics, tracing

# Methods outside this set share one label value, so a client cannot grow the label set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"


def route_of(request: HttpRequest) -> str:
    """The URL pattern that answered (`api/v1/entries/<uuid:pk>`), never the raw path."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None) if match is not None else None
    return str(route) if route else UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """First in MIDDLEWARE, so the figures include every other middleware's time."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if tracing.enabled():
            return self._traced(request)
        return self._counted(request)

    def _counted(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        metrics.HTTP_IN_PROGRESS.inc()
        status = "500"
        try:
            response = self.get_response(request)
            status = str(response.status_code)
            return response
        finally:
            metrics.HTTP_IN_PROGRESS.dec()
            method = request.method if request.method in KNOWN_METHODS else "other"
            route = route_of(request)
            metrics.HTTP_REQUESTS.labels(method, route, status).inc()
            metrics.HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)

    def _traced(self, request: HttpRequest) -> HttpResponse:
        """A server span for the request, continuing the caller's `traceparent` if any."""
        method = request.method if request.method in KNOWN_METHODS else "other"
        with tracing.tracer().start_as_current_span(
            f"HTTP {method}",
            context=tracing.extract(request.headers),
            kind=tracing.SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as span:
            try:
                response = self._counted(request)
            except Exception as exc:
                tracing.mark_failed(span, exc)
                raise
            route = route_of(request)
            span.update_name(f"HTTP {method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:  # noqa: PLR2004 - server errors fail the span
                span.set_status(tracing.Status(tracing.StatusCode.ERROR))
            return response
