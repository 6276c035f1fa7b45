"""Start-up objects frozen out of the collector's full passes (hallmark.startup), in a fresh
interpreter each (freezing is for the life of a process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str) -> list[int]:
    answer = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return [int(word) for word in answer.stdout.split()]


def test_freezing_takes_every_live_object_out_of_the_collectors_generations() -> None:
    tracked_before, frozen, tracked_after = _run(
        "import gc, grpc, cryptography.x509\n"
        "from hallmark.startup import freeze_startup_objects\n"
        "before = len(gc.get_objects())\n"
        "frozen = freeze_startup_objects()\n"
        "print(before, frozen, len(gc.get_objects()))\n"
    )

    assert frozen >= tracked_before * 0.9  # what start-up made, now frozen
    assert tracked_after < 100  # full collections walk only what is made from now on


def test_a_web_worker_freezes_its_objects_once_its_application_is_loaded() -> None:
    # gunicorn calls post_worker_init in each worker after loading the application
    (frozen,) = _run(
        "import gc\n"
        "from config import gunicorn_conf\n"
        "class Worker:\n"
        "    sockets = []\n"
        "    def handle_exit(self, signum, frame): pass\n"
        "gunicorn_conf.post_worker_init(Worker())\n"
        "print(gc.get_freeze_count())\n"
    )

    assert frozen > 10_000
