"""Bind workload attestation to the process that opened the connection.

SO_PEERCRED names the process that called connect(). A connection outlives that process's
image: the process can fork, leave the socket to its child and exec another binary (of the
same uid), or exit so that its pid goes to another process. Attesting "whatever runs at
that pid now" on each call would then hand the child the identity of a binary it is not.
So the agent records, when it accepts the connection, the process's start time
(/proc/<pid>/stat field 22: a recycled pid gets a new one) and the identity of its
executable (device and inode of /proc/<pid>/exe: exec replaces it), and refuses every
call on that connection once either no longer matches, or the process has gone.

What this cannot see: a process that execs another binary between its connect() and the
agent's accept reading /proc is recorded as that binary (SPIRE has the same window).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from attestors.workload import unix
from hallmark.selectors import Selector


class CallerChangedError(unix.WorkloadAttestationError):
    """The process at the connection's pid is no longer the one that connected."""

    code = "workload_caller_changed"


@dataclass(frozen=True)
class ConnectedProcess:
    """The process that opened a Workload API connection, as recorded at accept."""

    pid: int
    uid: int
    gid: int
    # Clock ticks after boot; None when the process was already gone at accept.
    start_time: int | None
    # (st_dev, st_ino) of its executable; None when /proc/<pid>/exe could not be read.
    executable: tuple[int, int] | None


def _start_time(proc: str, pid: int) -> int | None:
    try:
        raw = unix.read_proc_file(os.path.join(proc, str(pid), "stat"))
    except OSError:
        return None
    # comm (field 2) is in parentheses and may hold anything: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22, starttime; fields here begin at field 3
    except (IndexError, ValueError):
        return None


def _executable(proc: str, pid: int) -> tuple[int, int] | None:
    try:
        info = os.stat(os.path.join(proc, str(pid), "exe"))
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def connected_process(pid: int, uid: int, gid: int, *, proc: str = "/proc") -> ConnectedProcess:
    """Record the connecting process (call when the connection is accepted)."""
    return ConnectedProcess(pid, uid, gid, _start_time(proc, pid), _executable(proc, pid))


def check_same_process(caller: ConnectedProcess, *, proc: str = "/proc") -> None:
    """Raise CallerChangedError unless `caller.pid` still runs the image that connected."""
    if caller.start_time is None:
        raise CallerChangedError(
            f"workload_caller_changed: process {caller.pid} had exited when its connection "
            "was accepted; reconnect from the workload itself"
        )
    start_time = _start_time(proc, caller.pid)
    if start_time is None:
        raise CallerChangedError(
            f"workload_caller_changed: process {caller.pid}, which opened this connection, "
            "has exited; reconnect from the workload itself"
        )
    if start_time != caller.start_time:
        raise CallerChangedError(
            f"workload_caller_changed: pid {caller.pid} now belongs to another process than "
            "the one that opened this connection; reconnect from the workload itself"
        )
    if _executable(proc, caller.pid) != caller.executable:
        raise CallerChangedError(
            f"workload_caller_changed: process {caller.pid} runs another executable than when "
            "it opened this connection; reconnect from the workload itself"
        )


def attest_connected(
    caller: ConnectedProcess,
    *,
    max_exe_hash_bytes: int = unix.DEFAULT_MAX_EXE_HASH_BYTES,
    proc: str = "/proc",
    hash_cache: unix.ExeHashCache | None = None,
    may_block: bool = True,
) -> frozenset[Selector]:
    """The caller's `unix:` selectors, if it is still the process image that connected.

    Checked after reading /proc, so an exec or exit before or during the reading is caught.
    The executable's digest may come from `hash_cache` (unix.attest): it is keyed by the identity
    of the file the caller runs now, and that is the file it connected with (checked here).
    """
    try:
        selectors = unix.attest(
            caller.pid,
            caller.uid,
            caller.gid,
            max_exe_hash_bytes=max_exe_hash_bytes,
            proc=proc,
            hash_cache=hash_cache,
            may_block=may_block,
            executable=caller.executable,
            recheck=False,  # the check below is the surer one
        )
    except unix.WorkloadAttestationError:
        # A process that exited or became another one says so (CallerChangedError), not
        # that /proc could not be read.
        check_same_process(caller, proc=proc)
        raise
    # Once, after reading: the process at the pid now is the one that connected (its start
    # time; a pid is not reused while its process lives, so it was that one throughout) and
    # runs the executable it connected with, so what was read is that process image's. A
    # caller already gone at accept (no start time) is refused here too.
    check_same_process(caller, proc=proc)
    return selectors
