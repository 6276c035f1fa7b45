"""Unix workload attestation over a /proc the test controls: the refusals and exact fields.

`attest` reads `<proc>/<pid>/status` and `<proc>/<pid>/exe`; pointing `proc` at a directory
of the test's own makes the cases real processes rarely show on demand (a pid recycled while
it is attested, a status in another form, an executable exactly at the hash limit). Written
to kill the mutants `make mutation` found surviving in attestors/workload/unix.py.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from attestors.workload.unix import _READ_SIZE as READ_SIZE
from attestors.workload.unix import WorkloadAttestationError, attest, read_proc_file
from hallmark.selectors import Selector

PID = 4321
EXECUTABLE = os.path.realpath("/bin/sleep")


def _status(uid: str = "1000 1000 1000 1000", gid: str = "1000 1000 1000 1000") -> str:
    return f"Name:\tapp\nUid:\t{uid}\nGid:\t{gid}\nGroups:\t\n"


def _proc(tmp_path: Path, status: str | None = None, exe: str | None = None) -> Path:
    process = tmp_path / str(PID)
    process.mkdir()
    if status is not None:
        (process / "status").write_text(status)
    if exe is not None:
        (process / "exe").symlink_to(exe)
    return tmp_path


def _values(selectors: frozenset[Selector]) -> set[str]:
    return {s.value for s in selectors}


@pytest.mark.parametrize("pid", [0, -1])
def test_a_caller_without_a_pid_is_refused(tmp_path: Path, pid: int) -> None:
    with pytest.raises(WorkloadAttestationError, match="no pid"):
        attest(pid, 0, 0, proc=str(tmp_path))


def test_the_effective_ids_count_not_the_real_or_saved_ones(tmp_path: Path) -> None:
    # given a process whose real, effective, saved and filesystem uids all differ
    proc = _proc(tmp_path, _status(uid="1000 0 2000 3000", gid="1001 0 2001 3001"))

    # then it is the effective uid/gid (the second field) that must match the connection
    assert {"uid:0", "gid:0"} <= _values(attest(PID, 0, 0, proc=str(proc)))
    for uid, gid in ((1000, 1001), (2000, 2001), (3000, 3001)):
        with pytest.raises(WorkloadAttestationError, match="now runs as uid 0 gid 0"):
            attest(PID, uid, gid, proc=str(proc))


def test_a_gid_that_disagrees_alone_is_refused(tmp_path: Path) -> None:
    proc = _proc(tmp_path, _status())
    with pytest.raises(WorkloadAttestationError, match="not the uid 1000 gid 0"):
        attest(PID, 1000, 0, proc=str(proc))


def test_supplementary_groups_become_selectors(tmp_path: Path) -> None:
    proc = _proc(tmp_path, _status().replace("Groups:\t\n", "Groups:\t0 4242\n"))

    values = _values(attest(PID, 1000, 1000, proc=str(proc)))

    assert {"supplementary_gid:0", "supplementary_group:root", "supplementary_gid:4242"} <= values


@pytest.mark.parametrize(
    "status",
    ["Name:\tapp\nGid:\t0 0 0 0\n", "Uid:\t0\nGid:\t0 0 0 0\n", "Uid:\tx x x x\nGid:\t0 0 0 0\n"],
    ids=["no-uid", "short-uid", "not-a-number"],
)
def test_a_status_in_another_form_is_refused(tmp_path: Path, status: str) -> None:
    proc = _proc(tmp_path, status)
    with pytest.raises(WorkloadAttestationError, match="not in the expected form"):
        attest(PID, 0, 0, proc=str(proc))


def test_an_unreadable_status_is_refused(tmp_path: Path) -> None:
    proc = _proc(tmp_path)
    (proc / str(PID) / "status").mkdir()  # reading it fails with IsADirectoryError
    with pytest.raises(WorkloadAttestationError, match="cannot read"):
        attest(PID, 0, 0, proc=str(proc))


def test_a_process_that_changes_while_it_is_attested_is_refused(tmp_path: Path) -> None:
    # given a status that reads one way at first and another way on the re-check
    # (what a pid recycled mid-attestation looks like)
    proc = _proc(tmp_path)
    status = proc / str(PID) / "status"
    os.mkfifo(status)
    changed = tmp_path / "changed-status"
    changed.write_text(_status().replace("Groups:\t\n", "Groups:\t4242\n"))

    def serve() -> None:
        # the first read gets the FIFO's answer; before it ends, a different status takes the
        # FIFO's place, so every later read sees that one
        with open(status, "w") as handle:
            handle.write(_status())
            os.replace(changed, status)

    writer = threading.Thread(target=serve, daemon=True)
    writer.start()
    try:
        with pytest.raises(WorkloadAttestationError, match="changed while"):
            attest(PID, 1000, 1000, proc=str(proc))
    finally:
        writer.join(timeout=10)


def test_a_deleted_executable_is_named_by_its_path(tmp_path: Path) -> None:
    proc = _proc(tmp_path, _status(), exe="/opt/app/bin/server (deleted)")

    values = _values(attest(PID, 1000, 1000, proc=str(proc)))

    assert "path:/opt/app/bin/server" in values
    assert not any(v.startswith("sha256:") for v in values)  # nothing there to hash


def test_an_executable_of_exactly_the_hash_limit_is_hashed(tmp_path: Path) -> None:
    proc = _proc(tmp_path, _status(), exe=EXECUTABLE)
    size = os.path.getsize(EXECUTABLE)
    digest = hashlib.sha256(Path(EXECUTABLE).read_bytes()).hexdigest()

    at_limit = _values(attest(PID, 1000, 1000, proc=str(proc), max_exe_hash_bytes=size))
    over = _values(attest(PID, 1000, 1000, proc=str(proc), max_exe_hash_bytes=size - 1))

    assert f"sha256:{digest}" in at_limit
    assert f"path:{EXECUTABLE}" in over
    assert not any(v.startswith("sha256:") for v in over)


def test_an_executable_larger_than_a_read_chunk_is_hashed_whole(tmp_path: Path) -> None:
    # more than the 1 MiB read size, with its last byte different from an all-zero file's
    big = tmp_path / "big-executable"
    big.write_bytes(b"\0" * (1024 * 1024 + 10) + b"\1")
    proc = _proc(tmp_path, _status(), exe=str(big))

    values = _values(attest(PID, 1000, 1000, proc=str(proc)))

    assert f"sha256:{hashlib.sha256(big.read_bytes()).hexdigest()}" in values


def test_a_process_name_with_colons_does_not_confuse_the_status_reader(tmp_path: Path) -> None:
    # a workload picks its own name (prctl PR_SET_NAME), colons included
    proc = _proc(tmp_path, _status().replace("Name:\tapp", "Name:\tweb:server:1"))

    assert {"uid:1000", "gid:1000"} <= _values(attest(PID, 1000, 1000, proc=str(proc)))


def test_pid_1_is_a_caller_like_any_other(tmp_path: Path) -> None:
    # the agent's namespace may see a workload as pid 1 (a container sharing it, or init)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "status").write_text(_status())

    assert "uid:1000" in _values(attest(1, 1000, 1000, proc=str(tmp_path)))


@pytest.mark.parametrize("size", [READ_SIZE - 1, READ_SIZE, 2 * READ_SIZE, 2 * READ_SIZE + 7])
def test_a_proc_file_is_read_whole_whatever_its_size(tmp_path: Path, size: int) -> None:
    # a status far longer than usual (thousands of supplementary groups), at and around the
    # read size: every byte comes back, none twice
    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "status"
    path.write_bytes(content)

    assert read_proc_file(str(path)) == content


def test_reading_a_proc_file_leaves_no_descriptor_open(tmp_path: Path) -> None:
    path = tmp_path / "status"
    path.write_bytes(b"Uid:\t0 0 0 0\n")
    before = len(os.listdir("/proc/self/fd"))

    for _ in range(50):
        read_proc_file(str(path))

    assert len(os.listdir("/proc/self/fd")) == before


def test_the_user_and_group_names_are_selectors_without_a_cache_too() -> None:
    # the test process itself, attested with no hash cache: names come from the system's
    # user and group databases at once
    import grp
    import pwd

    values = _values(attest(os.getpid(), os.geteuid(), os.getegid()))

    assert f"user:{pwd.getpwuid(os.geteuid()).pw_name}" in values
    assert f"group:{grp.getgrgid(os.getegid()).gr_name}" in values


def test_a_process_name_that_looks_like_a_uid_line_does_not_count(tmp_path: Path) -> None:
    # the kernel writes a newline in a process's name as the two characters "\n": a name
    # chosen to read as a Uid line stays part of the Name line
    proc = _proc(tmp_path, _status().replace("Name:\tapp", "Name:\tx\\nUid:\t0 0 0 0"))

    assert {"uid:1000", "gid:1000"} <= _values(attest(PID, 1000, 1000, proc=str(proc)))
    with pytest.raises(WorkloadAttestationError, match="now runs as uid 1000"):
        attest(PID, 0, 1000, proc=str(proc))


@pytest.mark.parametrize(
    "status",
    ["Uid:\t7 7 7 7\nGid:\t8 8 8 8\n", "Gid:\t8 8 8 8\nUid:\t7 7 7 7"],
    ids=["uid-first", "uid-last-no-newline"],
)
def test_the_first_and_the_last_line_of_a_status_are_read(tmp_path: Path, status: str) -> None:
    proc = _proc(tmp_path, status)

    assert {"uid:7", "gid:8"} <= _values(attest(PID, 7, 8, proc=str(proc)))
