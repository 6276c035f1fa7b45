"""The embedded default: real servers under the data dir that keep their data across restarts."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hvac
import psycopg
import pytest
import redis

from config.embedded import MAX_CONNECTIONS, EmbeddedServers

pytestmark = pytest.mark.slow
SERVER_VARIABLES = ("HALLMARK_DATABASE_URL", "HALLMARK_REDIS_URL", "HALLMARK_VAULT_ADDR")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A data dir outside pytest's own temporary root. As root, pgserver runs PostgreSQL as
    the user "pgserver", who must pass through every parent; pytest sets its root
    (/tmp/pytest-of-<user>) back to 0700 whenever another pytest session starts, so a second
    session on the machine (`make test-fast`, a mutation run) made these tests fail."""
    path = Path(tempfile.mkdtemp(prefix="hallmark-embedded-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_external_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the session's servers so EmbeddedServers starts a fresh set of its own."""
    for name in (*SERVER_VARIABLES, "HALLMARK_VAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _start(data_dir: Path) -> tuple[EmbeddedServers, dict[str, str]]:
    for name in (*SERVER_VARIABLES, "HALLMARK_VAULT_TOKEN"):  # start() exports them
        os.environ.pop(name, None)
    servers = EmbeddedServers(data_dir)
    return servers, servers.start()


def test_embedded_servers_keep_their_data_across_a_restart(
    tmp_path: Path, no_external_servers: None
) -> None:
    servers, urls = _start(tmp_path)
    try:
        with psycopg.connect(urls["HALLMARK_DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('postgres survives')")
            # A whole plane's processes fit: initdb's 100 connections do not.
            assert conn.execute("SHOW max_connections").fetchone() == (str(MAX_CONNECTIONS),)
        redis.Redis.from_url(urls["HALLMARK_REDIS_URL"]).set("kept", "redis survives")
        vault = hvac.Client(url=urls["HALLMARK_VAULT_ADDR"], token=urls["HALLMARK_VAULT_TOKEN"])
        vault.secrets.transit.create_key("kept", key_type="ecdsa-p256", exportable=False)
    finally:
        servers.stop()

    servers, urls = _start(tmp_path)
    try:
        with psycopg.connect(urls["HALLMARK_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("postgres survives",)
            assert conn.execute("SHOW max_connections").fetchone() == (str(MAX_CONNECTIONS),)
        assert redis.Redis.from_url(urls["HALLMARK_REDIS_URL"]).get("kept") == b"redis survives"
        vault = hvac.Client(url=urls["HALLMARK_VAULT_ADDR"], token=urls["HALLMARK_VAULT_TOKEN"])
        assert not vault.sys.is_sealed()
        assert vault.secrets.transit.read_key("kept")["data"]["exportable"] is False
    finally:
        servers.stop()


def test_openbao_unseal_material_is_private_and_storage_is_persistent(
    tmp_path: Path, no_external_servers: None
) -> None:
    servers, _ = _start(tmp_path)
    servers.stop()

    init_file = tmp_path / "openbao" / "init.json"
    assert stat.S_IMODE(init_file.stat().st_mode) == 0o600
    config = (tmp_path / "openbao" / "config.hcl").read_text()
    assert 'storage "raft"' in config  # not the in-memory dev mode


def test_stopping_the_servers_it_started_ends_their_postgresql(
    tmp_path: Path, no_external_servers: None
) -> None:
    # given the servers of a fresh data dir (whose PostgreSQL is restarted once, for its
    # connection limit, while starting)
    servers, _ = _start(tmp_path)
    postmaster = int((tmp_path / "postgres" / "postmaster.pid").read_text().split()[0])
    assert _alive(postmaster)

    # when the process that started them stops them
    servers.stop()

    # then no PostgreSQL is left running on the data dir (it was, before the fix)
    assert not _alive(postmaster)
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


def _alive(pid: int) -> bool:
    """A running process (an exited one that nobody reaped yet, a zombie, is not)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def test_configured_external_servers_start_nothing_embedded(tmp_path: Path) -> None:
    assert all(os.environ.get(name) for name in SERVER_VARIABLES)  # the session's servers

    servers = EmbeddedServers(tmp_path)
    exported = servers.start()

    assert exported == {}
    assert servers.started == []
    assert not (tmp_path / "postgres").exists() and not (tmp_path / "openbao").exists()


def test_openbao_that_aborts_while_starting_is_started_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an OpenBao that aborts on its first start (as seen once under load) and then runs:
    # a wrapper that kills itself with SIGABRT once, and execs the real binary after that
    servers = EmbeddedServers(tmp_path / "data")
    real = servers._bao_binary()
    marker = tmp_path / "aborted-once"
    wrapper = tmp_path / "bao"
    wrapper.write_text(
        f'#!/bin/sh\nif [ ! -e "{marker}" ]; then touch "{marker}"; kill -ABRT $$; fi\n'
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(0o700)
    monkeypatch.setattr(servers, "_bao_binary", lambda: str(wrapper))
    said: list[str] = []
    monkeypatch.setattr(servers, "_progress", said.append)

    # when only OpenBao is started
    try:
        address, token = servers._start_openbao()

        # then the abort was reported and the second start serves the Vault API, unsealed
        assert marker.exists()
        assert any("exited with -6" in s and "starting it once more" in s for s in said)
        client = hvac.Client(url=address, token=token)
        assert client.sys.is_initialized() and not client.sys.is_sealed()
    finally:
        servers.stop()


def test_a_process_that_joined_the_servers_leaves_them_running_when_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given PostgreSQL and Redis started by one process's EmbeddedServers (Vault stays the
    # session's: only what is missing is started)
    monkeypatch.delenv("HALLMARK_DATABASE_URL")
    monkeypatch.delenv("HALLMARK_REDIS_URL")
    owner = EmbeddedServers(tmp_path)
    urls = owner.start()
    try:
        # and a second one (another test session, `hallmark manage`) that joins them
        monkeypatch.delenv("HALLMARK_DATABASE_URL")
        monkeypatch.delenv("HALLMARK_REDIS_URL")
        joiner = EmbeddedServers(tmp_path)
        assert joiner.start()["HALLMARK_REDIS_URL"] == urls["HALLMARK_REDIS_URL"]

        # when the joiner stops
        joiner.stop()

        # then the owner's servers still serve
        assert redis.Redis.from_url(urls["HALLMARK_REDIS_URL"]).ping()
        with psycopg.connect(urls["HALLMARK_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        owner.stop()
