"""Unix workload attestation: selectors for a calling process from the kernel and /proc.

The uid and gid come from the accepted socket's SO_PEERCRED, which the kernel fills in; the
caller cannot lie about them. /proc adds the supplementary groups, the executable's path and
its SHA-256. A selector that cannot be determined is left out rather than guessed: matching
is by subset, so a missing selector can only make fewer entries match, never more.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
from dataclasses import dataclass

from hallmark.errors import HallmarkError
from hallmark.selectors import Selector

SELECTOR_TYPE = "unix"
DEFAULT_MAX_EXE_HASH_BYTES = 64 * 1024 * 1024
_DELETED_SUFFIX = " (deleted)"
_log = logging.getLogger(__name__)


class WorkloadAttestationError(HallmarkError):
    """The calling process could not be attested (it exited, or /proc disagrees)."""

    code = "workload_attestation_failed"


@dataclass(frozen=True)
class _ProcStatus:
    effective_uid: int
    effective_gid: int
    groups: tuple[int, ...]


def _read_status(proc: str, pid: int) -> _ProcStatus:
    try:
        with open(os.path.join(proc, str(pid), "status"), encoding="utf-8") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        raise WorkloadAttestationError(
            f"process {pid} exited before it could be attested"
        ) from None
    except OSError as exc:
        raise WorkloadAttestationError(f"cannot read /proc/{pid}/status: {exc}") from None
    try:
        uids = fields["Uid"].split()
        gids = fields["Gid"].split()
        groups = tuple(int(g) for g in fields.get("Groups", "").split())
        return _ProcStatus(int(uids[1]), int(gids[1]), groups)
    except (KeyError, IndexError, ValueError):
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


def _exe_sha256(proc: str, pid: int, max_bytes: int) -> str | None:
    # Hash /proc/<pid>/exe itself, not the path: the file at the path may have been replaced.
    try:
        with open(os.path.join(proc, str(pid), "exe"), "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                _log.warning(
                    "no unix:sha256 selector for pid %d: executable is %d bytes (limit %d)",
                    pid,
                    size,
                    max_bytes,
                )
                return None
            digest = hashlib.sha256()
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
            return digest.hexdigest()
    except OSError as exc:
        _log.warning("no unix:sha256 selector for pid %d: %s", pid, exc)
        return None


def attest(
    pid: int,
    uid: int,
    gid: int,
    *,
    max_exe_hash_bytes: int = DEFAULT_MAX_EXE_HASH_BYTES,
    proc: str = "/proc",
) -> frozenset[Selector]:
    """The `unix:` selectors of process `pid`, whose uid/gid the kernel reported (SO_PEERCRED).

    Raises WorkloadAttestationError when the process is gone or /proc shows another effective
    uid/gid than the kernel reported for the connection (the pid was reused, or the process
    changed identity since it connected): in both cases nothing about it can be trusted.
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
    if (user := _user_name(uid)) is not None:
        values.append(f"user:{user}")
    if (group := _group_name(gid)) is not None:
        values.append(f"group:{group}")
    for supplementary in status.groups:
        values.append(f"supplementary_gid:{supplementary}")
        if (name := _group_name(supplementary)) is not None:
            values.append(f"supplementary_group:{name}")
    if (path := _exe_path(proc, pid)) is not None:
        values.append(f"path:{path}")
        if (digest := _exe_sha256(proc, pid, max_exe_hash_bytes)) is not None:
            values.append(f"sha256:{digest}")
    # Re-check after reading: if the pid was recycled meanwhile, the facts may be another's.
    if _read_status(proc, pid) != status:
        raise WorkloadAttestationError(f"process {pid} changed while it was being attested")
    return frozenset(Selector(SELECTOR_TYPE, value) for value in values)
