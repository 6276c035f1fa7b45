"""The Workload API socket directory check, called directly, at its edges."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.workload.socketdir import SocketDirectoryError, prepare_socket_directory
from hallmark.relay import MAX_SOCKET_PATH


@pytest.fixture
def base(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)  # pytest's tmp dirs are 0700 under a root-owned parent
    return tmp_path


def test_a_missing_directory_is_made_the_agents_and_closed_to_others(base: Path) -> None:
    directory = prepare_socket_directory(str(base / "public" / "api.sock"))

    info = os.lstat(directory)
    assert directory == str(base / "public")
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
    assert not info.st_mode & 0o022


def test_a_file_where_the_directory_should_be_is_refused(base: Path) -> None:
    (base / "public").write_text("not a directory")

    with pytest.raises(SocketDirectoryError, match="not a directory"):
        prepare_socket_directory(str(base / "public" / "api.sock"))


def test_a_path_of_the_longest_length_is_served_and_one_byte_more_is_refused(base: Path) -> None:
    # given socket paths of exactly MAX_SOCKET_PATH bytes and of one byte more
    directory = base / "public"
    room = MAX_SOCKET_PATH - len(os.fsencode(str(directory))) - 1  # and the slash
    longest = str(directory / ("s" * room))
    assert len(os.fsencode(longest)) == MAX_SOCKET_PATH

    # then the longest is served, and the longer one refused with its own code
    assert prepare_socket_directory(longest) == str(directory)
    with pytest.raises(SocketDirectoryError) as refused:
        prepare_socket_directory(longest + "s")
    assert refused.value.code == "socket_path_too_long"


def test_a_made_directory_is_0755_whatever_the_umask(base: Path) -> None:
    # given a process umask that lets everything through
    previous = os.umask(0)
    try:
        directory = prepare_socket_directory(str(base / "public" / "api.sock"))
    finally:
        os.umask(previous)
    # then the directory made is exactly rwxr-xr-x
    assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o755


def test_a_directory_above_owned_by_another_user_is_refused(base: Path) -> None:
    # given the socket directory is the agent's, inside one owned by uid 1 (not root, not
    # the agent), who could rename it away and put their own in its place
    theirs = base / "theirs"
    theirs.mkdir(mode=0o755)
    (theirs / "public").mkdir(mode=0o755)
    os.chown(theirs, 1, 1)

    with pytest.raises(SocketDirectoryError, match="owned by uid 1,"):
        prepare_socket_directory(str(theirs / "public" / "api.sock"))


def test_every_directory_above_is_checked_not_only_the_nearest(base: Path) -> None:
    # given a safe parent inside a directory anyone may write, without the sticky bit
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # noqa: S103
    (shared / "mid" / "public").mkdir(mode=0o755, parents=True)
    os.chmod(shared / "mid", 0o755)

    with pytest.raises(SocketDirectoryError, match="sticky"):
        prepare_socket_directory(str(shared / "mid" / "public" / "api.sock"))
