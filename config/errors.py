"""Django's own error pages as the API's JSON `{code, detail}` (an unknown URL, a crash)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """An URL no route matches (DRF's own 404s are JSON already): the same `not_found`."""
    return JsonResponse({"code": "not_found", "detail": "not found"}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    """An unhandled exception: no traceback or exception text, only a stable code."""
    return JsonResponse(
        {"code": "internal_error", "detail": "the server failed; try again"}, status=500
    )
