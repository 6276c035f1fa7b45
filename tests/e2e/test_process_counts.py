"""`hallmark up` runs as many processes of each kind as its settings say.

The suite's planes run one of each (tests/e2e/conftest.py control_plane_env); a plane that
ignored HALLMARK_WEB_WORKERS, HALLMARK_WORKER_CONCURRENCY or HALLMARK_AGENT_API_PROCESSES
would run the defaults, two of each.
"""

from __future__ import annotations

import psutil
import pytest

pytestmark = pytest.mark.e2e


def _kinds(plane_pid: int) -> dict[str, int]:
    counts = {"gunicorn": 0, "celery worker": 0, "agent-api": 0, "bundle-endpoint": 0}
    for child in psutil.Process(plane_pid).children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "gunicorn" in command:
            counts["gunicorn"] += 1
        elif "celery" in command and " worker " in command:
            counts["celery worker"] += 1
        elif "config.cli agent-api" in command:
            counts["agent-api"] += 1
        elif "config.cli bundle-endpoint" in command:
            counts["bundle-endpoint"] += 1
    return counts


def test_the_plane_runs_the_processes_its_settings_ask_for(control_plane) -> None:
    # given a plane started with one web worker, one Celery process and one agent-API process
    assert control_plane.env["HALLMARK_WEB_WORKERS"] == "1"
    assert control_plane.env["HALLMARK_WORKER_CONCURRENCY"] == "1"
    assert control_plane.env["HALLMARK_AGENT_API_PROCESSES"] == "1"
    # then gunicorn runs its master and one worker, Celery its main process and one child,
    # and one agent-API and one bundle-endpoint process serve their ports
    assert _kinds(control_plane.process.pid) == {
        "gunicorn": 2,
        "celery worker": 2,
        "agent-api": 1,
        "bundle-endpoint": 1,
    }
