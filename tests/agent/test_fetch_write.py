"""`hallmark-agent api fetch x509 --write DIR` against files planted by another local user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.agent.conftest import WorkloadServer
from tests.agent.test_cli import hallmark_agent


def _fetch_into(workload_server: WorkloadServer, directory: Path) -> tuple[int, str]:
    result = hallmark_agent(
        "api", "fetch", "x509", "--socket", workload_server.endpoint, "--write", str(directory)
    )
    return result.returncode, result.stdout + result.stderr


def test_planted_symlink_at_the_key_path_is_replaced_not_followed(
    workload_server: WorkloadServer, tmp_path: Path
) -> None:
    # given svid.0.key planted as a symlink to a file the attacker can read
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    victim = tmp_path / "attacker-readable"
    victim.write_text("planted\n")
    (out / "svid.0.key").symlink_to(victim)

    # when the SVIDs are written there
    code, output = _fetch_into(workload_server, out)

    # then the key went into a new regular 0600 file and the link's target is untouched
    assert code == 0, output
    assert victim.read_text() == "planted\n"
    info = os.lstat(out / "svid.0.key")
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (out / "svid.0.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_planted_hard_link_is_not_truncated(
    workload_server: WorkloadServer, tmp_path: Path
) -> None:
    # given svid.0.pem planted as a hard link to another file
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    victim = tmp_path / "precious"
    victim.write_text("keep me\n")
    os.link(victim, out / "svid.0.pem")

    # when the SVIDs are written there
    code, output = _fetch_into(workload_server, out)

    # then the other file keeps its content: the SVID went into a new file
    assert code == 0, output
    assert victim.read_text() == "keep me\n"
    assert (out / "svid.0.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_directory_writable_by_others_is_refused(
    workload_server: WorkloadServer, tmp_path: Path
) -> None:
    # given an output directory anyone may write (no sticky bit)
    out = tmp_path / "shared"
    out.mkdir()
    os.chmod(out, 0o777)  # noqa: S103

    # when the SVIDs would be written there
    code, output = _fetch_into(workload_server, out)

    # then nothing is written and the error names the fix
    assert code == 1
    assert "unsafe_output_dir" in output and "chmod go-w" in output
    assert list(out.iterdir()) == []


def test_symlinked_output_directory_is_refused(
    workload_server: WorkloadServer, tmp_path: Path
) -> None:
    # given DIR is a symlink to somewhere else
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    link = tmp_path / "out"
    link.symlink_to(real)

    # when the SVIDs would be written through it
    code, output = _fetch_into(workload_server, link)

    # then it is refused and nothing lands in the target
    assert code == 1
    assert "unsafe_output_dir" in output
    assert list(real.iterdir()) == []
