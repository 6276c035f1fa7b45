"""Unix workload attestation against real processes and the real /proc."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from attestors.workload.unix import WorkloadAttestationError, attest
from hallmark.selectors import Selector

SLEEP = "/bin/sleep"


def _values(selectors: frozenset[Selector]) -> set[str]:
    assert all(s.type == "unix" for s in selectors)
    return {s.value for s in selectors}


@pytest.fixture
def nobody_process() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([SLEEP, "60"], user=65534, group=65534, extra_groups=[65534, 100])
    _wait_for_exec(process.pid, os.path.realpath(SLEEP))
    yield process
    process.kill()
    process.wait()


def _wait_for_exec(pid: int, executable: str) -> None:
    # Popen returns once the child is forked, not once it has exec'd: until then the child
    # already runs as nobody but /proc/<pid>/exe is still the interpreter (or briefly absent).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/exe") == executable:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not exec {executable} within 10 s")


def test_current_process_selectors_come_from_the_kernel_and_proc() -> None:
    # given this test process
    exe = os.path.realpath(f"/proc/{os.getpid()}/exe")
    with open(exe, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()

    # when it is attested with its own credentials
    values = _values(attest(os.getpid(), os.geteuid(), os.getegid()))

    # then uid, gid, names, executable path and hash are there
    assert f"uid:{os.geteuid()}" in values
    assert f"gid:{os.getegid()}" in values
    assert "user:root" in values
    assert "group:root" in values
    assert f"path:{exe}" in values
    assert f"sha256:{digest}" in values


def test_process_running_as_another_uid_is_attested_as_that_uid(
    nobody_process: subprocess.Popen[bytes],
) -> None:
    # when a process running as nobody is attested
    values = _values(attest(nobody_process.pid, 65534, 65534))

    # then it gets nobody's selectors and its own executable, and none of root's
    assert {"uid:65534", "gid:65534", "user:nobody", "group:nogroup"} <= values
    assert {"supplementary_gid:100", "supplementary_group:users"} <= values
    assert f"path:{os.path.realpath(SLEEP)}" in values
    assert "uid:0" not in values
    assert "user:root" not in values


def test_credentials_that_disagree_with_proc_are_refused(
    nobody_process: subprocess.Popen[bytes],
) -> None:
    # when the credentials do not match the process (a recycled pid, say)
    # then attestation fails instead of trusting either side
    with pytest.raises(WorkloadAttestationError, match="not the uid 0"):
        attest(nobody_process.pid, 0, 0)


def test_vanished_process_fails_attestation_clearly() -> None:
    # given a process that has exited and been reaped
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()

    # then attesting it raises a clear error
    with pytest.raises(WorkloadAttestationError, match="exited") as info:
        attest(process.pid, 0, 0)
    assert info.value.code == "workload_attestation_failed"


def test_executable_over_the_hash_limit_gets_no_sha256_selector() -> None:
    # when the hash size cap is below the executable's size
    values = _values(attest(os.getpid(), os.geteuid(), os.getegid(), max_exe_hash_bytes=16))

    # then the path is still there but no hash is claimed
    assert any(v.startswith("path:") for v in values)
    assert not any(v.startswith("sha256:") for v in values)
