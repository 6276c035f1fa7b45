"""Counts each API call a tenant token made (one Redis HINCRBY, after the answer is built)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from tenants.metering import services


class ApiCallMeteringMiddleware:
    """A request that token authentication gave a tenant counts as one of its API calls."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        tenant = getattr(request, "tenant", None)
        if tenant is not None and getattr(tenant, "schema_name", "public") != "public":
            services.count_api_call(tenant.pk)
        return response
