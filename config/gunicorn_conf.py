"""gunicorn hooks for the web tier: the metrics listener, dead workers' gauges, the drain."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

from config import logcontext, metrics, tracing
from hallmark.startup import freeze_startup_objects


def when_ready(server: Any) -> None:
    # In the master, before the first worker: it outlives its workers, and the multiprocess
    # directory holds their sum.
    metrics.clean_multiprocess_directory()
    metrics.serve_from_environment()


def child_exit(server: Any, worker: Any) -> None:
    metrics.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    """On SIGTERM a worker stops listening at once, then finishes its requests in flight.

    gunicorn's master closes its copy of the listening socket on SIGTERM, but a gthread worker
    keeps its own copy open until its drain is over: the kernel would go on queueing new
    connections that nobody serves. Closing the worker's copies too makes a new connection
    refused (or, on a shared port, sent to a replica still listening) during the drain.
    """
    tracing.configure("web")  # each worker its own exporter thread (when tracing is on)
    # The application is loaded: its objects leave the collector's full passes (~70 ms each).
    freeze_startup_objects()
    graceful_exit = worker.handle_exit

    def handle_exit(signum: int, frame: Any) -> None:
        graceful_exit(signum, frame)  # stops the worker's loop; its requests in flight go on
        if hasattr(worker, "set_accept_enabled"):
            worker.set_accept_enabled(False)  # out of the poller before the socket closes
        for listener in worker.sockets:
            with contextlib.suppress(OSError):
                listener.close()

    signal.signal(signal.SIGTERM, handle_exit)


def _json_logging() -> dict[str, Any] | None:
    """gunicorn's own lines (its error log and access log) as JSON, when the format says so."""
    if logcontext.log_format() != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "config.logcontext.JsonFormatter"}},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }


logconfig_dict = _json_logging() or {}
