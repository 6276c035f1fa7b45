"""Request ids: each HTTP request gets one (a sane inbound X-Request-Id, or a fresh one).

The id is echoed in the response's X-Request-Id header and exposed for the duration of the
request through `current_request_id()` (a context var kept in tenants.audit.context), so
every audit event written while serving it carries it, with the client address; log lines
written while serving it carry it too (config.logcontext).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from config import logcontext
from tenants.audit.context import accepted, request_context
from tenants.audit.context import current_request_id as current_request_id  # noqa: PLC0414
from tenants.audit.context import (
    current_source_address as current_source_address,  # noqa: PLC0414
)

HEADER = "X-Request-Id"


class RequestIdMiddleware:
    """Accept or make the request id, expose it while the view runs, echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = accepted(request.headers.get(HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        with (
            request_context(request_id, str(request.META.get("REMOTE_ADDR", ""))),
            logcontext.bound(request_id=request_id),
        ):
            response = self.get_response(request)
        response[HEADER] = request_id
        return response
