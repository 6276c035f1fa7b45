"""Request ids: each HTTP request gets one (a sane inbound X-Request-Id, or a fresh one).

The id is echoed in the response's X-Request-Id header and exposed for the duration of the
request through `current_request_id()`, so every audit event written while serving it
carries it; `current_source_address()` gives the client address the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import uuid
from collections.abc import Callable, Iterator

from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-Id"
# Printable, no spaces or separators that a log or CSV would split on; at most 128 characters.
_SANE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}$")
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_source: contextvars.ContextVar[str] = contextvars.ContextVar("source_address", default="")


def current_request_id() -> str:
    """The id of the request being served, or "" outside a request."""
    return _request_id.get()


def current_source_address() -> str:
    """The client address of the request being served, or "" outside a request."""
    return _source.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted(inbound: str | None) -> str:
    """The inbound id if it is sane, else a fresh one."""
    if inbound and _SANE.match(inbound):
        return inbound
    return new_request_id()


@contextlib.contextmanager
def request_context(request_id: str, source: str = "") -> Iterator[str]:
    """Serve something (an HTTP request, an agent API call) under this id and address."""
    id_token = _request_id.set(request_id)
    source_token = _source.set(source)
    try:
        yield request_id
    finally:
        _request_id.reset(id_token)
        _source.reset(source_token)


class RequestIdMiddleware:
    """Accept or make the request id, expose it while the view runs, echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = accepted(request.headers.get(HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        with request_context(request_id, str(request.META.get("REMOTE_ADDR", ""))):
            response = self.get_response(request)
        response[HEADER] = request_id
        return response
