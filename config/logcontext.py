"""Structured logs: who a log line is about (tenant, request id), and a one-line JSON format.

`HALLMARK_LOG_FORMAT=json` makes every process write one JSON object per line with `time`,
`level`, `logger`, `message`, `role` (web, agent-api, worker, beat, ...), `pid`, and `tenant`
and `request_id` while code runs inside `bound(...)`, and `trace_id` inside a traced span
(config.tracing); `text` (the default) keeps the readable
lines. The values live in context variables, so asyncio tasks and `contextvars.copy_context`
carry them; a plain thread pool does not, and its lines go without.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from config import tracing

FORMAT_VARIABLE = "HALLMARK_LOG_FORMAT"
ROLE_VARIABLE = "HALLMARK_PROCESS_ROLE"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

request_id: ContextVar[str | None] = ContextVar("hallmark_request_id", default=None)
tenant: ContextVar[str | None] = ContextVar("hallmark_tenant", default=None)
_FIELDS: dict[str, ContextVar[str | None]] = {"request_id": request_id, "tenant": tenant}


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Log lines written inside carry these fields (`tenant=`, `request_id=`)."""
    tokens = [(_FIELDS[name], _FIELDS[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            # An async generator closed from another task's context cannot reset its token;
            # that context ends with it anyway.
            with contextlib.suppress(ValueError):
                variable.reset(token)


def current() -> dict[str, str]:
    return {name: value for name, variable in _FIELDS.items() if (value := variable.get())}


def process_role() -> str:
    """What this process is: `hallmark up` names its children; otherwise the program's name."""
    return os.environ.get(ROLE_VARIABLE) or Path(sys.argv[0] or "python").name


def log_format() -> str:
    chosen = os.environ.get(FORMAT_VARIABLE, "text").strip().lower() or "text"
    if chosen not in ("json", "text"):
        raise ValueError(f"{FORMAT_VARIABLE}={chosen!r}: use json or text")
    return chosen


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on an odd record."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "role": process_role(),
            "pid": record.process,
            **current(),
        }
        trace_id = tracing.current_trace_id()  # inside a traced span (config.tracing)
        if trace_id is not None:
            document["trace_id"] = trace_id
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def formatter() -> logging.Formatter:
    return JsonFormatter() if log_format() == "json" else logging.Formatter(TEXT_FORMAT)


def logging_config(level: str) -> dict[str, Any]:
    """The dictConfig for Django's LOGGING (and gunicorn's, in JSON mode)."""
    chosen = (
        {"()": "config.logcontext.JsonFormatter"}
        if log_format() == "json"
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": chosen},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "WARNING"}},
    }


def reformat_handlers(logger: logging.Logger) -> None:
    """Give a logger's handlers the chosen format (Celery sets up its own handlers)."""
    if log_format() == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
