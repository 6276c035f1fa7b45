"""The request an audit event is written for: its id and client address, as context vars.

The web's middleware (config.requestid) and the agent API set them for each request or
call; `record_audit` reads them when its caller passes none.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import uuid
from collections.abc import Iterator

# Printable, no spaces or separators a log line or CSV would split on; at most 128 characters.
_SANE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}$")
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_source: contextvars.ContextVar[str] = contextvars.ContextVar("source_address", default="")


def current_request_id() -> str:
    """The id of the request being served, or "" outside a request."""
    return _request_id.get()


def current_source_address() -> str:
    """The client address of the request being served, or "" outside a request."""
    return _source.get()


def accepted(inbound: str | None) -> str:
    """The inbound id if it is sane, else a fresh one."""
    if inbound and _SANE.match(inbound):
        return inbound
    return uuid.uuid4().hex


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
