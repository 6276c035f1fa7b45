"""The executable-hash cache: one SHA-256 per executable file, never a stale one.

Digests are counted through the cache's own `computed` counter (every digest computed on a
cache miss goes through it), against real files and, where the case needs a process, real
processes and /proc. The cache's clock is set ahead where a test needs files written just
now to count as settled (a real agent only caches files last changed seconds before).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attestors.workload.process import CallerChangedError, attest_connected, connected_process
from attestors.workload.unix import RACY_MARGIN_NS, ExeHashCache, WouldBlock, attest
from hallmark.selectors import Selector

PID = 4321
SLEEP = os.path.realpath("/bin/sleep")
INTERPRETER = os.path.realpath(sys.executable)
STATUS = "Name:\tapp\nUid:\t1000 1000 1000 1000\nGid:\t1000 1000 1000 1000\nGroups:\t\n"


def _settled_cache(max_entries: int = 16) -> ExeHashCache:
    """A cache whose clock runs ahead, so files written by the test count as settled."""
    return ExeHashCache(max_entries, clock=lambda: time.time_ns() + 2 * RACY_MARGIN_NS)


def _proc(root: Path, pid: int, exe: Path) -> Path:
    process = root / str(pid)
    process.mkdir(parents=True, exist_ok=True)
    (process / "status").write_text(STATUS)
    link = process / "exe"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(exe)
    return root


def _digest_of(selectors: frozenset[Selector]) -> str | None:
    found = [s.value.removeprefix("sha256:") for s in selectors if s.value.startswith("sha256:")]
    return found[0] if found else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_file_is_hashed_once_across_calls_and_callers(tmp_path: Path) -> None:
    # given one executable run by two processes
    exe = tmp_path / "server"
    exe.write_bytes(b"\x7fELF" + os.urandom(3000))
    proc = tmp_path / "proc"
    _proc(proc, PID, exe)
    _proc(proc, PID + 1, exe)
    cache = _settled_cache()

    # when both are attested several times
    digests = {
        _digest_of(attest(pid, 1000, 1000, proc=str(proc), hash_cache=cache))
        for pid in (PID, PID + 1, PID, PID + 1, PID)
    }

    # then the file was hashed once, and every call got its true digest
    assert digests == {_sha256(exe)}
    assert cache.computed == 1


def test_a_file_replaced_at_the_same_path_is_hashed_again(tmp_path: Path) -> None:
    exe = tmp_path / "server"
    exe.write_bytes(b"version one" * 100)
    proc = _proc(tmp_path / "proc", PID, exe)
    cache = _settled_cache()
    first = _digest_of(attest(PID, 1000, 1000, proc=str(proc), hash_cache=cache))

    # when the file at the path is replaced (a new inode, same size), as a deploy does
    replacement = tmp_path / "server.new"
    replacement.write_bytes(b"version two" * 100)
    os.replace(replacement, exe)
    second = _digest_of(attest(PID, 1000, 1000, proc=str(proc), hash_cache=cache))

    # then the new content is hashed, not the old digest served
    assert first == hashlib.sha256(b"version one" * 100).hexdigest()
    assert second == _sha256(exe) != first
    assert cache.computed == 2


def test_a_file_rewritten_in_place_is_hashed_again(tmp_path: Path) -> None:
    # same inode, same size, mtime set back to what it was: only the ctime tells
    exe = tmp_path / "server"
    exe.write_bytes(b"A" * 4096)
    proc = _proc(tmp_path / "proc", PID, exe)
    cache = _settled_cache()
    before = exe.stat()
    first = _digest_of(attest(PID, 1000, 1000, proc=str(proc), hash_cache=cache))

    deadline = time.monotonic() + 5
    while exe.stat().st_ctime_ns == before.st_ctime_ns and time.monotonic() < deadline:
        with open(exe, "r+b") as handle:
            handle.write(b"B" * 4096)
        os.utime(exe, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = _digest_of(attest(PID, 1000, 1000, proc=str(proc), hash_cache=cache))

    assert exe.stat().st_ino == before.st_ino and exe.stat().st_mtime_ns == before.st_mtime_ns
    assert first == hashlib.sha256(b"A" * 4096).hexdigest()
    assert second == hashlib.sha256(b"B" * 4096).hexdigest()
    assert cache.computed == 2


def test_a_file_changed_just_before_its_hash_is_not_cached(tmp_path: Path) -> None:
    # with the real clock, a file written now may still be rewritten within its time stamp's
    # granularity without changing its key: it is hashed on every call until it settles
    exe = tmp_path / "server"
    exe.write_bytes(b"fresh" * 100)
    proc = _proc(tmp_path / "proc", PID, exe)
    cache = ExeHashCache()

    for _ in range(3):
        digest = _digest_of(attest(PID, 1000, 1000, proc=str(proc), hash_cache=cache))
        assert digest == _sha256(exe)

    assert cache.computed == 3
    assert len(cache) == 0


def test_the_size_limit_holds_with_the_cache(tmp_path: Path) -> None:
    exe = tmp_path / "server"
    exe.write_bytes(b"x" * 5000)
    proc = _proc(tmp_path / "proc", PID, exe)
    cache = _settled_cache()

    over = attest(PID, 1000, 1000, proc=str(proc), max_exe_hash_bytes=4999, hash_cache=cache)
    at = attest(PID, 1000, 1000, proc=str(proc), max_exe_hash_bytes=5000, hash_cache=cache)
    # a digest cached under a larger limit is not served past a smaller one
    over_again = attest(PID, 1000, 1000, proc=str(proc), max_exe_hash_bytes=4999, hash_cache=cache)

    assert _digest_of(over) is None and _digest_of(over_again) is None
    assert f"path:{exe}" in {s.value for s in over}
    assert _digest_of(at) == _sha256(exe)
    assert cache.computed == 1


def test_an_unreadable_executable_leaves_the_selector_out(tmp_path: Path) -> None:
    proc = _proc(tmp_path / "proc", PID, tmp_path / "gone")
    cache = _settled_cache()

    selectors = attest(PID, 1000, 1000, proc=str(proc), hash_cache=cache)

    assert _digest_of(selectors) is None
    assert cache.computed == 0 and len(cache) == 0


def test_the_cache_is_bounded_least_recently_used_out(tmp_path: Path) -> None:
    files = []
    for n in range(3):
        exe = tmp_path / f"server{n}"
        exe.write_bytes(bytes([n]) * 1000)
        _proc(tmp_path / "proc", PID + n, exe)
        files.append(exe)
    proc = str(tmp_path / "proc")
    cache = _settled_cache(max_entries=2)

    for n in (0, 1, 0, 2):  # 1 is the least recently used when 2 comes in
        attest(PID + n, 1000, 1000, proc=proc, hash_cache=cache)
    assert len(cache) == 2 and cache.computed == 3
    attest(PID + 0, 1000, 1000, proc=proc, hash_cache=cache)
    assert cache.computed == 3  # 0 was kept
    attest(PID + 1, 1000, 1000, proc=proc, hash_cache=cache)
    assert cache.computed == 4  # 1 was evicted, so hashed again
    assert len(cache) == 2


def test_without_leave_to_hash_a_miss_is_reported_not_hashed(tmp_path: Path) -> None:
    exe = tmp_path / "server"
    exe.write_bytes(b"y" * 100)
    proc = str(_proc(tmp_path / "proc", PID, exe))
    cache = _settled_cache()

    with pytest.raises(WouldBlock):
        attest(PID, 1000, 1000, proc=proc, hash_cache=cache, may_block=False)
    assert cache.computed == 0
    attest(PID, 1000, 1000, proc=proc, hash_cache=cache)
    cached = attest(PID, 1000, 1000, proc=proc, hash_cache=cache, may_block=False)

    assert _digest_of(cached) == _sha256(exe)
    assert cache.computed == 1


def _wait_for_exe(pid: int, executable: str) -> None:
    for _ in range(1000):
        try:
            if os.readlink(f"/proc/{pid}/exe") == executable:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not exec {executable}")


def test_a_process_that_execs_another_binary_is_not_served_the_cached_identity(
    tmp_path: Path,
) -> None:
    # given a process of a copied interpreter, attested with its digest cached
    copy = tmp_path / "python-copy"
    shutil.copy2(INTERPRETER, copy)
    script = "import os, sys; sys.stdin.readline(); os.execv('/bin/sleep', ['sleep', '60'])"
    env = {**os.environ, "PYTHONHOME": sys.base_prefix}
    child = subprocess.Popen([str(copy), "-c", script], stdin=subprocess.PIPE, env=env)
    try:
        _wait_for_exe(child.pid, str(copy))
        caller = connected_process(child.pid, os.geteuid(), os.getegid())
        cache = _settled_cache()
        selectors = attest_connected(caller, hash_cache=cache)
        assert _digest_of(selectors) == _sha256(copy)
        assert attest_connected(caller, hash_cache=cache, may_block=False) == selectors

        # when it execs /bin/sleep on the same pid
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        _wait_for_exe(child.pid, SLEEP)

        # then neither path, with or without leave to hash, serves the old identity
        with pytest.raises(CallerChangedError):
            attest_connected(caller, hash_cache=cache)
        with pytest.raises(CallerChangedError):
            attest_connected(caller, hash_cache=cache, may_block=False)
        assert cache.computed == 1
    finally:
        child.kill()
        child.wait()


def test_attest_connected_passes_its_hash_limit_through() -> None:
    # the gap mutation testing named: a non-default max_exe_hash_bytes must reach the attestor
    caller = connected_process(os.getpid(), os.geteuid(), os.getegid())
    size = os.path.getsize(f"/proc/{os.getpid()}/exe")

    under = attest_connected(caller, max_exe_hash_bytes=size - 1)
    at = attest_connected(caller, max_exe_hash_bytes=size)

    assert _digest_of(under) is None
    assert (
        _digest_of(at) == hashlib.sha256(Path(f"/proc/{os.getpid()}/exe").read_bytes()).hexdigest()
    )


def test_names_are_looked_up_once_then_served_without_blocking_oldest_out() -> None:
    cache = ExeHashCache(2)
    # not looked up yet: a caller that may not block is told so
    with pytest.raises(WouldBlock):
        cache.name("user", 0, may_block=False)
    assert cache.name("user", 0, may_block=True) == "root"
    assert cache.name("user", 1, may_block=True) is not None
    # both held (the table holds two): served without a lookup
    assert cache.name("user", 0, may_block=False) == "root"
    assert cache.name("user", 1, may_block=False) is not None
    # a third pushes the oldest out
    cache.name("user", 2, may_block=True)
    assert cache.name("user", 2, may_block=False) is not None
    assert cache.name("user", 1, may_block=False) is not None
    with pytest.raises(WouldBlock):
        cache.name("user", 0, may_block=False)


def test_a_file_whose_mtime_was_set_ahead_is_not_cached(tmp_path: Path) -> None:
    # utime can put a file's mtime past its ctime: the newer of the two decides whether the
    # file changed too recently to trust its digest
    exe = tmp_path / "server"
    exe.write_bytes(b"z" * 100)
    ahead = time.time() + 3600
    os.utime(exe, (ahead, ahead))
    proc = str(_proc(tmp_path / "proc", PID, exe))
    cache = _settled_cache()

    selectors = attest(PID, 1000, 1000, proc=proc, hash_cache=cache)

    assert _digest_of(selectors) == _sha256(exe)
    assert len(cache) == 0


def test_with_a_cache_the_caller_is_named_by_user_and_group_too() -> None:
    import grp
    import pwd

    values = {
        s.value for s in attest(os.getpid(), os.geteuid(), os.getegid(), hash_cache=ExeHashCache(4))
    }

    assert f"user:{pwd.getpwuid(os.geteuid()).pw_name}" in values
    assert f"group:{grp.getgrgid(os.getegid()).gr_name}" in values


def test_an_executable_over_the_limit_is_warned_of_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a caller whose executable is over the hash limit, attested on every call
    exe = tmp_path / "server"
    exe.write_bytes(b"x" * 5000)
    proc = str(_proc(tmp_path / "proc", PID, exe))
    cache = _settled_cache()

    def warnings() -> int:
        return sum(
            1 for r in caplog.records if r.levelname == "WARNING" and "limit 4999" in r.message
        )

    caplog.set_level("DEBUG", logger="attestors.workload.unix")
    for _ in range(3):
        assert (
            _digest_of(
                attest(PID, 1000, 1000, proc=proc, max_exe_hash_bytes=4999, hash_cache=cache)
            )
            is None
        )

    # then the log says so once, not once a call (a workload calls many times a second)
    assert warnings() == 1
    # and a new file at that path is another executable: said again
    replacement = tmp_path / "server.new"
    replacement.write_bytes(b"y" * 6000)
    os.replace(replacement, exe)
    attest(PID, 1000, 1000, proc=proc, max_exe_hash_bytes=4999, hash_cache=cache)
    assert sum(1 for r in caplog.records if r.levelname == "WARNING" and "limit" in r.message) == 2
    assert cache.computed == 0


def test_a_caller_attested_again_gets_the_same_selector_set(tmp_path: Path) -> None:
    # given one caller attested twice with a cache
    exe = tmp_path / "server"
    exe.write_bytes(b"\x7fELF" + os.urandom(100))
    proc = str(_proc(tmp_path / "proc", PID, exe))
    cache = _settled_cache()

    first = attest(PID, 1000, 1000, proc=proc, hash_cache=cache)
    again = attest(PID, 1000, 1000, proc=proc, hash_cache=cache)

    # then the very same set comes back (built once), equal to one built without the cache
    assert again is first
    assert first == attest(PID, 1000, 1000, proc=proc)
    # and a caller whose facts differ gets its own set
    (tmp_path / "proc" / str(PID) / "status").write_text(
        STATUS.replace("Groups:\t\n", "Groups:\t4242\n")
    )
    other = attest(PID, 1000, 1000, proc=proc, hash_cache=cache)
    assert other != first
    assert Selector("unix", "supplementary_gid:4242") in other


def test_attest_connected_without_leave_to_block_reports_a_miss(tmp_path: Path) -> None:
    # a digest not cached yet: the event loop's attempt is told to go to a thread
    caller = connected_process(os.getpid(), os.geteuid(), os.getegid())
    cache = ExeHashCache()
    cache.name("user", os.geteuid(), may_block=True)
    cache.name("group", os.getegid(), may_block=True)
    for group in os.getgroups():
        cache.name("group", group, may_block=True)

    with pytest.raises(WouldBlock):
        attest_connected(caller, hash_cache=cache, may_block=False)
    assert cache.computed == 0
    assert _digest_of(attest_connected(caller, hash_cache=cache)) is not None
    assert cache.computed == 1


def test_refusals_are_remembered_least_recently_seen_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a cache remembering two over-limit files, and three such files
    cache = _settled_cache(max_entries=2)
    procs = []
    for pid, content in enumerate((b"a" * 100, b"b" * 100, b"c" * 100), start=PID):
        exe = tmp_path / f"server-{pid}"
        exe.write_bytes(content)
        procs.append((pid, str(_proc(tmp_path / "proc", pid, exe))))

    def warned_of(index: int) -> bool:
        caplog.clear()
        pid, proc = procs[index]
        attest(pid, 1000, 1000, proc=proc, max_exe_hash_bytes=10, hash_cache=cache)
        return any(r.levelname == "WARNING" and "limit 10" in r.message for r in caplog.records)

    caplog.set_level("DEBUG", logger="attestors.workload.unix")
    assert warned_of(0) and warned_of(1)
    # when the first is seen again, then a third pushes one out
    assert not warned_of(0)
    assert warned_of(2)
    # then the one out is the least recently seen (the second), not the first
    assert not warned_of(0)
    assert warned_of(1)


def test_selector_sets_are_kept_least_recently_used_out() -> None:
    # given a cache holding two selector sets, and three callers' values
    cache = ExeHashCache(2)
    values = [("uid:1", "gid:1"), ("uid:2", "gid:2"), ("uid:3", "gid:3")]
    first, second = cache.selectors(values[0]), cache.selectors(values[1])

    # when the first is used again, then a third comes
    assert cache.selectors(values[0]) is first
    third = cache.selectors(values[2])

    # then the second (least recently used) was dropped: built anew, equal but not the same
    assert cache.selectors(values[0]) is first
    assert cache.selectors(values[2]) is third
    rebuilt = cache.selectors(values[1])
    assert rebuilt == second and rebuilt is not second
    assert rebuilt == {Selector("unix", "uid:2"), Selector("unix", "gid:2")}
