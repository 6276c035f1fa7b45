"""Unix workload attestation: selectors for a calling process from the kernel and /proc.

The uid and gid come from the accepted socket's SO_PEERCRED, which the kernel fills in; the
caller cannot lie about them. /proc adds the supplementary groups, the executable's path and
its SHA-256. A selector that cannot be determined is left out rather than guessed: matching
is by subset, so a missing selector can only make fewer entries match, never more.

The SHA-256 is computed at most once per executable file, not per call: `ExeHashCache` keys
each digest by what identifies the file's content as the caller's /proc/<pid>/exe shows it
(device, inode, size, mtime and ctime in nanoseconds: stat of that link, which is the file
the process runs, or fstat of it once opened to be hashed). A file replaced at the same path
is another inode; a file rewritten in place changes its ctime (which no unprivileged process
can set back), so either way it is hashed again. A digest is only cached when the file's
identity is the same after the hash as before it, and when the file was last changed well
before the hash began (`RACY_MARGIN_NS`, as git treats "racily clean" files): file systems
stamp times coarsely (a clock tick, up to 2 s on some), so a file rewritten within the same
tick as its last change would otherwise keep its key.

Attesting is on the Workload API's every call, so with the cache a call costs a few reads of
/proc and no allocation it can avoid: a digest found by stat alone (the file is not opened),
the selector set of a caller seen before handed back as the same object, and an executable
over the size limit warned of once per file, not once per call.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hallmark.errors import HallmarkError
from hallmark.selectors import Selector

SELECTOR_TYPE = "unix"
DEFAULT_MAX_EXE_HASH_BYTES = 64 * 1024 * 1024
DEFAULT_HASH_CACHE_SIZE = 4096
# A file changed less than this before its hash began is hashed again on every call.
RACY_MARGIN_NS = 3_000_000_000
# How long a user or group name looked up for a uid/gid is reused.
NAME_TTL_NS = 5_000_000_000
_DELETED_SUFFIX = " (deleted)"
_log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")


class WorkloadAttestationError(HallmarkError):
    """The calling process could not be attested (it exited, or /proc disagrees)."""

    code = "workload_attestation_failed"


@dataclass(frozen=True)
class _ProcStatus:
    effective_uid: int
    effective_gid: int
    groups: tuple[int, ...]


_READ_SIZE = 16384


def read_proc_file(path: str) -> bytes:
    """A /proc file's whole content in as few read(2) calls as it takes (usually one).

    procfs (like any file) returns less than asked only at its end.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
            if len(chunk) < _READ_SIZE:
                break
        return b"".join(chunks)
    finally:
        os.close(fd)


def _status_field(raw: bytes, name: bytes) -> bytes | None:
    """The value of line `name` ("\\nUid:", led by its newline) in a status read between two
    newlines."""
    start = raw.find(name)
    if start < 0:
        return None
    start += len(name)
    return raw[start : raw.index(b"\n", start)]


def _read_status(proc: str, pid: int) -> _ProcStatus:
    try:
        # Between newlines, so every line, the first and the last too, is found by "\n<name>:"
        # and ends at a newline. The kernel escapes a newline in the one field a process sets
        # itself (Name), so no line is faked.
        raw = b"\n" + read_proc_file(os.path.join(proc, str(pid), "status")) + b"\n"
    except (FileNotFoundError, ProcessLookupError):
        raise WorkloadAttestationError(
            f"process {pid} exited before it could be attested"
        ) from None
    except OSError as exc:
        raise WorkloadAttestationError(f"cannot read /proc/{pid}/status: {exc}") from None
    uids, gids = _status_field(raw, b"\nUid:"), _status_field(raw, b"\nGid:")
    groups = _status_field(raw, b"\nGroups:") or b""
    try:
        if uids is None or gids is None:
            raise ValueError("no Uid or Gid line")
        return _ProcStatus(
            int(uids.split()[1]), int(gids.split()[1]), tuple(int(g) for g in groups.split())
        )
    except (IndexError, ValueError):
        raise WorkloadAttestationError(f"/proc/{pid}/status is not in the expected form") from None


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def _exe_path(proc: str, pid: int) -> str | None:
    try:
        path = os.readlink(os.path.join(proc, str(pid), "exe"))
    except OSError as exc:
        _log.warning("no unix:path selector for pid %d: %s", pid, exc)
        return None
    return path.removesuffix(_DELETED_SUFFIX)


# (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of an open executable.
FileIdentity = tuple[int, int, int, int, int]


def _identity(info: os.stat_result) -> FileIdentity:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _keep(table: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """`key` → `value` as `table`'s most recently used; the least recently used go past
    `limit`. The caller holds the table's lock."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


class WouldBlock(Exception):  # noqa: N818 (a signal to the caller, not an error)
    """Attesting needs work that may block (hash a file, ask NSS for a name) and the caller
    asked for none: what it needs is not cached."""


class ExeHashCache:
    """SHA-256 digests of executables by file identity; least recently used out first.

    Thread-safe: the agent attests on its event loop when the digest is cached and in a
    worker thread when it is not. `computed` counts the digests actually computed.
    It also keeps user and group names (NSS may be a network service) for NAME_TTL_NS.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_HASH_CACHE_SIZE,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._digests: OrderedDict[FileIdentity, str] = OrderedDict()
        self._lock = threading.Lock()
        self._names: OrderedDict[tuple[str, int], tuple[int, str | None]] = OrderedDict()
        self._refused: OrderedDict[FileIdentity, None] = OrderedDict()
        self._selector_sets: OrderedDict[tuple[str, ...], frozenset[Selector]] = OrderedDict()
        self.computed = 0

    def __len__(self) -> int:
        return len(self._digests)

    def get(self, identity: FileIdentity) -> str | None:
        with self._lock:
            digest = self._digests.get(identity)
            if digest is not None:
                self._digests.move_to_end(identity)
            return digest

    def first_refusal(self, identity: FileIdentity) -> bool:
        """True the first time this file is found too large to hash (while remembered)."""
        with self._lock:
            first = identity not in self._refused
            _keep(self._refused, identity, None, self._max_entries)
            return first

    def selectors(self, values: tuple[str, ...]) -> frozenset[Selector]:
        """The `unix:` selector set of these values, built once while it is in use: a caller
        attested again gets the very same set (and the views keyed by it stay warm)."""
        with self._lock:
            found = self._selector_sets.get(values)
            if found is not None:
                self._selector_sets.move_to_end(values)
                return found
        found = frozenset(Selector(SELECTOR_TYPE, value) for value in values)
        with self._lock:
            _keep(self._selector_sets, values, found, self._max_entries)
        return found

    def name(self, kind: str, number: int, may_block: bool) -> str | None:
        """The user (kind "user") or group name of `number`, looked up at most every TTL."""
        key = (kind, number)
        now = time.monotonic_ns()
        with self._lock:
            held = self._names.get(key)
        if held is not None and now < held[0]:
            return held[1]
        if not may_block:
            raise WouldBlock(key)
        value = _user_name(number) if kind == "user" else _group_name(number)
        with self._lock:
            _keep(self._names, key, (now + NAME_TTL_NS, value), self._max_entries)
        return value

    def now_ns(self) -> int:
        return self._clock()

    def put(self, identity: FileIdentity, digest: str, started_ns: int) -> None:
        """Count a computed digest; keep it unless the file changed too recently to trust."""
        with self._lock:
            self.computed += 1
            if max(identity[3], identity[4]) >= started_ns - RACY_MARGIN_NS:
                return
            _keep(self._digests, identity, digest, self._max_entries)


def _exe_sha256(
    proc: str,
    pid: int,
    *,
    max_bytes: int,
    cache: ExeHashCache | None,
    may_block: bool,
    executable: tuple[int, int] | None,
) -> str | None:
    # Hash /proc/<pid>/exe itself, not the path: the file at the path may have been replaced.
    exe = os.path.join(proc, str(pid), "exe")
    try:
        if cache is not None:
            # The cached case opens nothing: stat of the link is the file the process runs.
            info = os.stat(exe)
            if not _to_hash(pid, info, max_bytes, executable, cache):
                return None
            if (cached := cache.get(_identity(info))) is not None:
                return cached
            if not may_block:
                raise WouldBlock(pid)
        return _hash_file(exe, pid, max_bytes, cache, executable)
    except OSError as exc:
        _log.warning("no unix:sha256 selector for pid %d: %s", pid, exc)
        return None


def _to_hash(
    pid: int,
    info: os.stat_result,
    max_bytes: int,
    executable: tuple[int, int] | None,
    cache: ExeHashCache | None,
) -> bool:
    """Whether the file `info` describes gets a digest: the executable expected, if one is, and
    within the size limit (a file over it is warned of once per file with a cache)."""
    if executable is not None and (info.st_dev, info.st_ino) != executable:
        return False  # not the file the caller connected with: it is refused anyway
    if info.st_size > max_bytes:
        first = cache is None or cache.first_refusal(_identity(info))
        _log.log(
            logging.WARNING if first else logging.DEBUG,
            "no unix:sha256 selector for pid %d: executable is %d bytes (limit %d)",
            pid,
            info.st_size,
            max_bytes,
        )
        return False
    return True


def _hash_file(
    exe: str,
    pid: int,
    max_bytes: int,
    cache: ExeHashCache | None,
    executable: tuple[int, int] | None,
) -> str | None:
    with open(exe, "rb") as handle:
        before = os.fstat(handle.fileno())
        if not _to_hash(pid, before, max_bytes, executable, None):
            return None
        identity = _identity(before)
        started = cache.now_ns() if cache is not None else 0
        digest = hashlib.sha256()
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
        if _identity(os.fstat(handle.fileno())) != identity:
            _log.warning("no unix:sha256 selector for pid %d: executable changed", pid)
            return None
        if cache is not None:
            cache.put(identity, digest.hexdigest(), started)
        return digest.hexdigest()


def attest(
    pid: int,
    uid: int,
    gid: int,
    *,
    max_exe_hash_bytes: int = DEFAULT_MAX_EXE_HASH_BYTES,
    proc: str = "/proc",
    hash_cache: ExeHashCache | None = None,
    may_block: bool = True,
    executable: tuple[int, int] | None = None,
    recheck: bool = True,
) -> frozenset[Selector]:
    """The `unix:` selectors of process `pid`, whose uid/gid the kernel reported (SO_PEERCRED).

    With `hash_cache`, the executable's digest is looked up there first (and stored after it is
    computed), and user and group names too. With `may_block` False, raises WouldBlock instead
    of hashing a file whose digest is not cached or asking NSS for a name: the agent then
    attests again in a worker thread, off its event loop. With `executable` (st_dev, st_ino),
    no digest is looked up or computed for another file.

    Raises WorkloadAttestationError when the process is gone or /proc shows another effective
    uid/gid than the kernel reported for the connection (the pid was reused, or the process
    changed identity since it connected): in both cases nothing about it can be trusted. The
    status is read again at the end for that; `recheck` False leaves that out, for a caller
    that checks after it by a surer test that `pid` is still the process it was
    (attestors.workload.process: the start time and executable recorded at connect, which a
    recycled pid does not keep; an exec'd process is refused there, so its new binary is
    not hashed here first, given `executable`).
    """
    if pid <= 0:
        raise WorkloadAttestationError("the kernel reported no pid for the caller")
    status = _read_status(proc, pid)
    if (status.effective_uid, status.effective_gid) != (uid, gid):
        raise WorkloadAttestationError(
            f"process {pid} now runs as uid {status.effective_uid} gid {status.effective_gid}, "
            f"not the uid {uid} gid {gid} it connected with"
        )
    values: list[str] = [f"uid:{uid}", f"gid:{gid}"]

    def group_name(number: int) -> str | None:
        if hash_cache is None:
            return _group_name(number)
        return hash_cache.name("group", number, may_block)

    user = _user_name(uid) if hash_cache is None else hash_cache.name("user", uid, may_block)
    if user is not None:
        values.append(f"user:{user}")
    if (group := group_name(gid)) is not None:
        values.append(f"group:{group}")
    for supplementary in status.groups:
        values.append(f"supplementary_gid:{supplementary}")
        if (name := group_name(supplementary)) is not None:
            values.append(f"supplementary_group:{name}")
    if (path := _exe_path(proc, pid)) is not None:
        values.append(f"path:{path}")
        digest = _exe_sha256(
            proc,
            pid,
            max_bytes=max_exe_hash_bytes,
            cache=hash_cache,
            may_block=may_block,
            executable=executable,
        )
        if digest is not None:
            values.append(f"sha256:{digest}")
    # Re-check after reading: if the pid was recycled meanwhile, the facts may be another's.
    if recheck and _read_status(proc, pid) != status:
        raise WorkloadAttestationError(f"process {pid} changed while it was being attested")
    if hash_cache is not None:
        return hash_cache.selectors(tuple(values))
    return frozenset(Selector(SELECTOR_TYPE, value) for value in values)
