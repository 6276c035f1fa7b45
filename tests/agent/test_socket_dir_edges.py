"""The Workload API socket directory check, called directly, at its edges."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.workload.socketdir import SocketDirectoryError, prepare_socket_directory


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
