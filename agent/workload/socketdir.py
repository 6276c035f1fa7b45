"""The Workload API socket's directory: created for the agent, refused when others control it.

Whoever can write the socket's directory (or rename it away) can put their own socket in
its place and serve workloads false identities, or read what they send. So the directory
must be the agent's own, not writable by group or others, and not a symlink; each directory
above it must belong to root or the agent and, if others may write it, carry the sticky bit
(as /tmp does), so nobody else can swap it.
"""

from __future__ import annotations

import os
import stat

from hallmark.errors import HallmarkError
from hallmark.relay import MAX_SOCKET_PATH


class SocketDirectoryError(HallmarkError):
    """The Workload API socket cannot be served safely where it was asked for."""

    code = "unsafe_socket_dir"


def _refuse(message: str) -> SocketDirectoryError:
    return SocketDirectoryError(f"unsafe_socket_dir: {message}")


def prepare_socket_directory(socket_path: str) -> str:
    """Create the socket's directory (0755) if missing; refuse one that others control.

    Returns the directory. Raises SocketDirectoryError saying what to change.
    """
    path = os.path.abspath(socket_path)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise SocketDirectoryError(
            f"socket_path_too_long: {path} is longer than a Unix socket path may be "
            f"({MAX_SOCKET_PATH} bytes); pass a shorter --socket",
            code="socket_path_too_long",
        )
    directory = os.path.dirname(path)
    if not os.path.lexists(directory):
        os.makedirs(directory, mode=0o755, exist_ok=True)
    info = os.lstat(directory)
    euid = os.geteuid()
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(
            f"{directory} is a symlink; point --socket at a real directory the agent owns"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(f"{directory} is not a directory; choose another --socket")
    if info.st_uid != euid:
        raise _refuse(
            f"{directory} is owned by uid {info.st_uid}, not the agent (uid {euid}); another "
            "user may have created it to take over the socket: remove it (the agent creates "
            f"it) or chown it to uid {euid}"
        )
    if info.st_mode & 0o022:
        raise _refuse(
            f"{directory} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"chmod go-w {directory}, or choose another --socket"
        )
    _check_ancestors(os.path.realpath(directory), euid)
    return directory


def _check_ancestors(directory: str, euid: int) -> None:
    parent = os.path.dirname(directory)
    while True:
        info = os.stat(parent)
        if info.st_uid not in (0, euid):
            raise _refuse(
                f"{parent}, above the socket, is owned by uid {info.st_uid}, who could swap "
                "the socket directory; put the socket under directories root or the agent own"
            )
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise _refuse(
                f"{parent}, above the socket, is writable by group or others without the "
                "sticky bit, so anyone could swap the socket directory; chmod go-w "
                f"{parent} or choose another --socket"
            )
        if parent == os.path.dirname(parent):
            return
        parent = os.path.dirname(parent)
