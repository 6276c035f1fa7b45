"""A real Celery worker in a test's own process that leaves the process as it found it.

Celery's `start_worker` changes the app for the rest of the process: a worker given `queues`
selects them on the app for every later worker (one started without `queues` then consumes
only the first one's queue), and its logging set-up replaces the root logger's handlers and
level (pytest's log capture stops seeing anything). Both were seen in `make test`, where a
file's worker broke a later file's on the same xdist worker.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker


@contextlib.contextmanager
def real_worker(app: Celery, *, queues: list[str] | None = None, **options: Any) -> Iterator[Any]:
    """A solo-pool worker consuming `queues` (the app's default queue when not given)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    selection = app.amqp.queues
    try:
        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            queues=queues or [app.conf.task_default_queue],
            **options,
        ) as worker:
            yield worker
    finally:
        selection.select([app.conf.task_default_queue])
        root.handlers[:] = handlers
        root.setLevel(level)
