"""gunicorn hooks for the web tier: the metrics listener in the master, dead workers' gauges."""

from __future__ import annotations

from typing import Any

from config import metrics


def when_ready(server: Any) -> None:
    # In the master: it outlives its workers, and the multiprocess directory holds their sum.
    metrics.serve_from_environment()


def child_exit(server: Any, worker: Any) -> None:
    metrics.mark_process_dead(worker.pid)
