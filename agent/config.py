"""Agent configuration from command-line flags and/or a TOML file (flags win)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from attestors.workload.catalog import WorkloadAttestors
from attestors.workload.plugin import AttestorConfigError
from hallmark.errors import HallmarkError, InvalidTrustDomain
from hallmark.spiffeid import TrustDomain

# The Workload API socket of an agent running as root; /run is root's alone, where /tmp
# would let any local user create the directory first.
DEFAULT_SOCKET = "/run/hallmark-agent/public/api.sock"
DEFAULT_DATA_DIR = "./.hallmark-agent"
DEFAULT_SYNC_INTERVAL = 5.0
DEFAULT_RESYNC_INTERVAL = 30.0
DEFAULT_MAX_EXE_HASH_BYTES = 64 * 1024 * 1024
DEFAULT_SVID_WAIT = 10.0
# Upper bound of the random delay before replacing SVIDs of a tainted authority, so that a
# fleet of agents does not ask for all its replacements in the same instant.
DEFAULT_TAINT_JITTER = 2.0
# The join token from the environment, so that it stays out of /proc/<pid>/cmdline.
JOIN_TOKEN_ENV = "HALLMARK_JOIN_TOKEN"  # noqa: S105 (a variable name, not a secret)
MAX_JOIN_TOKEN_FILE_BYTES = 4096


class ConfigError(HallmarkError):
    """Agent configuration that cannot be used; the message says what to do instead."""

    code = "invalid_agent_config"


@dataclass(frozen=True)
class ServerAddress:
    """The control plane's agent API endpoint, HOST:PORT."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        hint = "give the agent API endpoint as HOST:PORT, e.g. 127.0.0.1:8081"
        text = text.strip()
        if "://" in text:
            raise ConfigError(f"server address {text!r} has a scheme: {hint}")
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
            if not sep:
                raise ConfigError(f"server address {text!r} has an unclosed '[': {hint}")
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or ":" in host:
                raise ConfigError(f"server address {text!r} has no port: {hint}")
        if not host or "/" in host or " " in host:
            raise ConfigError(f"server address {text!r} has no valid host: {hint}")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"server address {text!r} has no valid port (1-65535): {hint}")
        return cls(host, int(port_text))

    @property
    def target(self) -> str:
        """The gRPC target, `host:port` (`[v6]:port` for IPv6)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.target


@dataclass(frozen=True)
class AgentConfig:
    """Everything `hallmark-agent run` needs; build it with `AgentConfig.load`."""

    server: ServerAddress
    trust_domain: TrustDomain
    join_token: str | None
    socket: str
    data_dir: str
    trust_bundle: str | None = None
    trust_bundle_url: str | None = None
    insecure_bootstrap: bool = False
    # Renewal checks (agent and workload SVIDs past half-life) run every `sync_interval`;
    # changes arrive by push (WatchUpdates); `resync_interval` is the safety-net resync.
    sync_interval: float = DEFAULT_SYNC_INTERVAL
    resync_interval: float = DEFAULT_RESYNC_INTERVAL
    max_exe_hash_bytes: int = DEFAULT_MAX_EXE_HASH_BYTES
    svid_wait: float = DEFAULT_SVID_WAIT
    taint_jitter: float = DEFAULT_TAINT_JITTER
    log_level: str = "INFO"
    join_token_file: str | None = None
    # The [workload_attestor.<type>] tables (attestors.workload.catalog); empty: unix alone.
    workload_attestor: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The attestors built from those tables when the config was read (their files read once);
    # None for a config built by hand: `workload_attestors_of` builds them then.
    workload_attestors: WorkloadAttestors | None = field(default=None, compare=False, repr=False)
    # `[node_attestor.<type>]` of the TOML file: one table, SPIRE's agent plugin settings.
    node_attestor: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any],
        config_file: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> AgentConfig:
        """Merge a TOML file (if given) with flags; flags that are None do not override.

        The join token comes from `join_token`, `join_token_file` or, when neither is given,
        the HALLMARK_JOIN_TOKEN environment variable.
        """
        values: dict[str, Any] = dict(read_toml(config_file)) if config_file else {}
        given = {k: v for k, v in flags.items() if v is not None and v is not False}
        if "join_token" in given or "join_token_file" in given:
            # A token given on the command line replaces the file's, whichever form it takes.
            values.pop("join_token", None)
            values.pop("join_token_file", None)
        values.update(given)
        env_token = (os.environ if environ is None else environ).get(JOIN_TOKEN_ENV, "")
        if env_token and not values.get("join_token") and not values.get("join_token_file"):
            values["join_token"] = env_token
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AgentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown agent setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        server_text = _text(values, "server", required=True)
        assert server_text is not None
        server = ServerAddress.parse(server_text)
        td_text = _text(values, "trust_domain", required=True)
        assert td_text is not None
        try:
            trust_domain = TrustDomain.parse(td_text)
        except InvalidTrustDomain as exc:
            raise ConfigError(f"trust_domain: {exc.detail}") from None
        except HallmarkError as exc:
            raise ConfigError(f"trust_domain {td_text!r}: {exc.detail}") from None
        trust_bundle = _text(values, "trust_bundle")
        trust_bundle_url = _text(values, "trust_bundle_url")
        insecure = values.get("insecure_bootstrap", False)
        if not isinstance(insecure, bool):
            raise ConfigError("insecure_bootstrap must be true or false")
        # --insecure-bootstrap with an http:// bundle URL says "fetch the bundle unverified";
        # it is one way to trust the server, not two.
        plain_url = trust_bundle_url is not None and trust_bundle_url.startswith("http://")
        chosen = [
            n
            for n, v in (
                ("--trust-bundle", trust_bundle),
                ("--trust-bundle-url", trust_bundle_url),
                ("--insecure-bootstrap", insecure and not plain_url),
            )
            if v
        ]
        if len(chosen) != 1:
            what = "none was given" if not chosen else f"got {' and '.join(chosen)}"
            raise ConfigError(
                "give exactly one way to trust the server: --trust-bundle FILE (the tenant's "
                "bundle, PEM or SPIFFE JSON), --trust-bundle-url URL, or --insecure-bootstrap "
                f"(development only); {what}"
            )
        if trust_bundle_url is not None:
            _check_bundle_url(trust_bundle_url, insecure)
        data_dir = _text(values, "data_dir") or DEFAULT_DATA_DIR
        return cls(
            server=server,
            trust_domain=trust_domain,
            join_token=_join_token(values),
            join_token_file=_text(values, "join_token_file"),
            socket=_text(values, "socket") or default_socket(data_dir),
            data_dir=data_dir,
            trust_bundle=trust_bundle,
            trust_bundle_url=trust_bundle_url,
            insecure_bootstrap=insecure,
            sync_interval=_positive(values, "sync_interval", DEFAULT_SYNC_INTERVAL),
            resync_interval=_positive(values, "resync_interval", DEFAULT_RESYNC_INTERVAL),
            max_exe_hash_bytes=int(
                _positive(values, "max_exe_hash_bytes", DEFAULT_MAX_EXE_HASH_BYTES)
            ),
            svid_wait=_positive(values, "svid_wait", DEFAULT_SVID_WAIT),
            taint_jitter=_non_negative(values, "taint_jitter", DEFAULT_TAINT_JITTER),
            log_level=(_text(values, "log_level") or "INFO").upper(),
            # built (and so checked) before the tables are copied, as one step of the checks
            workload_attestors=_workload_attestors(tables := values.get("workload_attestor")),
            workload_attestor=dict(tables or {}),
            node_attestor=_node_attestor(values),
        )


def _workload_attestors(tables: Any) -> WorkloadAttestors:
    """The workload attestors of the tables, built now so that a bad one stops the agent at
    start."""
    try:
        return WorkloadAttestors(tables)
    except AttestorConfigError as exc:
        raise ConfigError(exc.detail, code=exc.code) from None


def workload_attestors_of(config: AgentConfig) -> WorkloadAttestors:
    """The config's workload attestors (built once, when the config was read)."""
    if config.workload_attestors is not None:
        return config.workload_attestors
    return _workload_attestors(config.workload_attestor)


def default_socket(data_dir: str = DEFAULT_DATA_DIR, euid: int | None = None) -> str:
    """DEFAULT_SOCKET for root; `<data dir>/public/api.sock` for any other user.

    A non-root agent cannot create /run/hallmark-agent; its data dir is its own.
    """
    if (os.geteuid() if euid is None else euid) == 0:
        return DEFAULT_SOCKET
    return os.path.join(os.path.abspath(data_dir), "public", "api.sock")


def _check_bundle_url(url: str, insecure: bool) -> None:
    if url.startswith("https://"):
        return
    if url.startswith("http://"):
        if insecure:
            return
        raise ConfigError(
            f"trust_bundle_url {url!r} is plain http: anyone on the path could hand the agent "
            "another bundle. Use an https:// URL, or add --insecure-bootstrap to accept that "
            "risk (development only)",
            code="insecure_trust_bundle_url",
        )
    raise ConfigError(f"trust_bundle_url {url!r} must be an https:// URL")


def _node_attestor(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    tables = values.get("node_attestor", {})
    if not isinstance(tables, Mapping) or not all(isinstance(v, Mapping) for v in tables.values()):
        raise ConfigError("node_attestor must hold [node_attestor.<type>] tables")
    if len(tables) > 1:
        raise ConfigError(
            f"configure one node attestor; got {', '.join(sorted(tables))}",
            code="node_attestor_conflict",
        )
    if tables and (values.get("join_token") or values.get("join_token_file")):
        raise ConfigError(
            "give a join token or a [node_attestor.<type>] table, not both",
            code="node_attestor_conflict",
        )
    return {str(k): dict(v) for k, v in tables.items()}


def _join_token(values: Mapping[str, Any]) -> str | None:
    token = _text(values, "join_token")
    path = _text(values, "join_token_file")
    if token is not None and path is not None:
        raise ConfigError(
            "give the join token once: --join-token, --join-token-file or "
            f"{JOIN_TOKEN_ENV}, not several",
            code="join_token_conflict",
        )
    if path is None:
        return token
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JOIN_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read join token file {path}: {exc.strerror}",
            code="join_token_file_unreadable",
        ) from None
    text = data.decode("utf-8", "replace").strip()
    if not text or len(data) > MAX_JOIN_TOKEN_FILE_BYTES or any(c.isspace() for c in text):
        raise ConfigError(
            f"join token file {path} must hold one token on one line",
            code="join_token_file_invalid",
        )
    return text


_PLUGIN_TABLES = ("workload_attestor", "node_attestor")


def read_toml(path: str) -> dict[str, Any]:
    """The `[agent]` table of a TOML file, or its top level when there is no such table."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = document.get("agent", document)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [agent] must be a table")
    if table is not document:
        # [node_attestor.<type>] and [workload_attestor.<type>] tables sit beside [agent], as
        # SPIRE's plugins beside agent {}
        table = {**table, **{k: document[k] for k in _PLUGIN_TABLES if k in document}}
    return table


def _text(values: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = values.get(name)
    if value is None or value == "":
        if required:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{name} is required: pass {flag} or set {name} in the config file")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {type(value).__name__}")
    return value


def _positive(values: Mapping[str, Any], name: str, default: float) -> float:
    value = values.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, not {value!r}")
    return float(value)


def _non_negative(values: Mapping[str, Any], name: str, default: float) -> float:
    value = values.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{name} must be a number of seconds, 0 or more, not {value!r}")
    return float(value)
