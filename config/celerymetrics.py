"""Celery signal handlers: task counts, failures, durations; the metrics listener; JSON logs.

The worker's prefork pool runs tasks in child processes, which write to the multiprocess
directory; the listener runs in the worker's main process (or in beat) and answers their sum.
"""

from __future__ import annotations

import time
from typing import Any

from celery import current_app, signals

from config import logcontext, metrics

_started: dict[str, float] = {}


def _name(task: Any) -> str:
    return str(getattr(task, "name", None) or "unknown")


@signals.worker_init.connect
def _worker_listener(**_: Any) -> None:
    metrics.clean_multiprocess_directory()  # before the pool forks
    metrics.serve_from_environment()


@signals.beat_init.connect
def _beat_listener(sender: Any = None, **_: Any) -> None:
    from config.beatmetrics import PlatformCollector

    # Beat runs once per deployment: the platform-wide gauges are read here, counted once.
    metrics.serve_from_environment(
        collectors=[PlatformCollector(getattr(sender, "app", None) or current_app)]
    )


@signals.worker_process_shutdown.connect
def _pool_process_gone(**_: Any) -> None:
    metrics.mark_process_dead()


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.perf_counter()
    metrics.CELERY_TASKS_RUNNING.inc()


@signals.task_postrun.connect
def _task_finished(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    metrics.CELERY_TASKS_RUNNING.dec()
    started = _started.pop(task_id, None) if task_id is not None else None
    if started is not None:
        metrics.CELERY_TASK_DURATION.labels(_name(task)).observe(time.perf_counter() - started)
    label = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}.get(
        state or "", "other"
    )
    metrics.CELERY_TASKS.labels(_name(task), label).inc()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger: Any = None, **_: Any) -> None:
    # Celery installs its own handlers on the root and task loggers; HALLMARK_LOG_FORMAT=json
    # gives them the JSON format as well.
    if logger is not None:
        logcontext.reformat_handlers(logger)
