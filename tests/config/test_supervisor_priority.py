"""`hallmark up` runs the web tier at a lower CPU priority than the agent API (HALLMARK_WEB_NICE)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

from config.supervisor import _child_setup, _nice_of


def test_the_web_tier_is_nicer_than_the_agent_api_by_the_setting(settings) -> None:
    settings.WEB_NICE = 7
    assert _nice_of("web") == 7
    assert _nice_of("agent-api") == 0
    assert _nice_of("bundle-endpoint") == 0
    settings.WEB_NICE = 0
    assert _nice_of("web") == 0


def test_a_child_started_with_a_nice_runs_at_it() -> None:
    # the way `hallmark up` starts its children (config.supervisor.ControlPlane._spawn)
    answer = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "import os; print(os.nice(0))"],
        preexec_fn=functools.partial(_child_setup, 3),  # noqa: PLW1509
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert int(answer.stdout) == min(os.nice(0) + 3, 19)
