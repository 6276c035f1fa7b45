"""Every request starts in the public schema; token authentication moves it to the tenant's."""

from __future__ import annotations

from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse


class PublicSchemaMiddleware:
    """Start each request in `public` and return the connection there afterwards."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        connection.set_schema_to_public()
        try:
            return self.get_response(request)
        finally:
            connection.set_schema_to_public()


class DatabaseUnavailableMiddleware:
    """A database outage answers JSON 503 `database_unavailable`, not Django's HTML 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.get_response(request)
        except (OperationalError, InterfaceError):
            from tenants.api.errors import DATABASE_UNAVAILABLE, log

            log.warning("database unavailable during %s %s", request.method, request.path)
            return JsonResponse(DATABASE_UNAVAILABLE, status=503)
