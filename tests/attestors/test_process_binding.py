"""Attestation bound to the process that connected, against real processes and /proc."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from attestors.workload.process import (
    CallerChangedError,
    attest_connected,
    check_same_process,
    connected_process,
)
from attestors.workload.unix import WorkloadAttestationError, attest

SLEEP = os.path.realpath("/bin/sleep")
# Waits for a line on stdin, then becomes /bin/sleep (same pid, same uid, another binary).
EXEC_LATER = "import os, sys; sys.stdin.readline(); os.execv('/bin/sleep', ['sleep', '60'])"


def _wait_for_exe(pid: int, executable: str) -> None:
    for _ in range(1000):
        try:
            if os.readlink(f"/proc/{pid}/exe") == executable:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not exec {executable}")


def test_the_connected_process_is_attested_as_before() -> None:
    # given this process recorded as a caller
    caller = connected_process(os.getpid(), os.geteuid(), os.getegid())

    # then it passes the check and gets exactly the unix attestor's selectors
    check_same_process(caller)
    assert attest_connected(caller) == attest(os.getpid(), os.geteuid(), os.getegid())


def test_a_caller_that_execs_another_binary_is_refused() -> None:
    # given a process recorded while it runs the interpreter
    child = subprocess.Popen([sys.executable, "-c", EXEC_LATER], stdin=subprocess.PIPE)
    try:
        _wait_for_exe(child.pid, os.path.realpath(sys.executable))
        caller = connected_process(child.pid, 0, 0)
        check_same_process(caller)

        # when it execs /bin/sleep (same pid, same uid, same start time)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        _wait_for_exe(child.pid, SLEEP)

        # then it is no longer the caller that connected
        with pytest.raises(CallerChangedError, match="another executable"):
            attest_connected(caller)
    finally:
        child.kill()
        child.wait()


def test_a_caller_whose_pid_now_has_another_start_time_is_refused() -> None:
    # given a record of pid P whose start time is not that of the process now at P: what a
    # record of an earlier process at P looks like once the pid has been recycled
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        _wait_for_exe(child.pid, os.path.realpath(sys.executable))
        now = connected_process(child.pid, 0, 0)
        assert now.start_time is not None
        earlier = dataclasses.replace(now, start_time=now.start_time - 1)

        # then that record is refused, though pid, uid and executable all match
        with pytest.raises(CallerChangedError, match="another process"):
            attest_connected(earlier)
        assert attest_connected(now)
    finally:
        child.kill()
        child.wait()


def test_a_caller_that_has_exited_is_refused() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    caller = connected_process(child.pid, 0, 0)
    child.wait()

    with pytest.raises(CallerChangedError, match="exited"):
        attest_connected(caller)


def test_a_caller_that_changed_its_uid_is_refused_as_the_unix_attestor_refuses_it() -> None:
    # given this process recorded as if it had connected with another effective uid (what a
    # process that called setuid after connecting looks like): it is still the same image
    caller = connected_process(os.getpid(), os.geteuid() + 1, os.getegid())

    # then the unix attestor's own refusal is what the caller gets
    with pytest.raises(WorkloadAttestationError, match="now runs as uid") as refused:
        attest_connected(caller)
    assert not isinstance(refused.value, CallerChangedError)


def test_the_status_is_read_once_the_start_time_standing_for_its_re_read(tmp_path: Path) -> None:
    # given a /proc of the test's own: a process whose status reads one way the first time and
    # another way after (a FIFO replaced by a file once read), its stat and its executable
    pid = 4321
    process = tmp_path / str(pid)
    process.mkdir()
    (process / "stat").write_text(f"{pid} (app) " + " ".join(["S"] + ["0"] * 18 + ["777"]))
    (process / "exe").symlink_to(SLEEP)
    status = process / "status"
    os.mkfifo(status)
    first = "Name:\tapp\nUid:\t1000 1000 1000 1000\nGid:\t1000 1000 1000 1000\nGroups:\t\n"
    changed = tmp_path / "changed-status"
    changed.write_text(first.replace("Groups:\t\n", "Groups:\t4242\n"))

    def serve() -> None:
        with open(status, "w") as handle:
            handle.write(first)
            os.replace(changed, status)

    writer = threading.Thread(target=serve, daemon=True)
    caller = connected_process(pid, 1000, 1000, proc=str(tmp_path))
    writer.start()
    try:
        # when the caller is attested
        selectors = attest_connected(caller, proc=str(tmp_path))
    finally:
        writer.join(timeout=10)

    # then from the first reading alone: the check after it is the start time and executable,
    # not a second read of the status (unix.attest alone re-reads it, and would refuse here)
    assert "supplementary_gid:4242" not in {s.value for s in selectors}
    assert "uid:1000" in {s.value for s in selectors}
