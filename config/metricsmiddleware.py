"""Django middleware counting and timing every HTTP request by route template and status."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from config import metrics

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
