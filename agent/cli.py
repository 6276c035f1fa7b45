"""`hallmark-agent`: run the agent, fetch SVIDs from the Workload API, check health."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from agent.config import AgentConfig, ConfigError
from hallmark.errors import HallmarkError
from hallmark.startup import freeze_startup_objects

RUN_FLAGS = (
    "server",
    "trust_domain",
    "join_token",
    "join_token_file",
    "socket",
    "data_dir",
    "trust_bundle",
    "trust_bundle_url",
    "insecure_bootstrap",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hallmark-agent",
        description="Hallmark node agent: attests this node and serves the SPIFFE Workload API.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the agent",
        description="Attest to the control plane and serve the Workload API. Flags override "
        "the TOML config file (keys: the flag names with '_', optionally under [agent]).",
    )
    run.add_argument("--config", metavar="FILE", help="TOML config file")
    run.add_argument("--server", metavar="HOST:PORT", help="agent API endpoint")
    run.add_argument("--trust-domain", metavar="TD", help="the tenant's trust domain")
    token = run.add_mutually_exclusive_group()
    token.add_argument(
        "--join-token",
        metavar="TOKEN",
        help="single-use join token (visible to local users in the process list: prefer "
        "--join-token-file or $HALLMARK_JOIN_TOKEN)",
    )
    token.add_argument(
        "--join-token-file", metavar="FILE", help="read the single-use join token from FILE"
    )
    run.add_argument("--socket", metavar="PATH", help="Workload API socket path")
    run.add_argument("--data-dir", metavar="DIR", help="where the agent keeps its SVID and key")
    trust = run.add_mutually_exclusive_group()
    trust.add_argument("--trust-bundle", metavar="FILE", help="bundle file (PEM or SPIFFE JSON)")
    trust.add_argument("--trust-bundle-url", metavar="URL", help="https:// URL serving the bundle")
    run.add_argument(
        "--insecure-bootstrap",
        action="store_true",
        help="do not verify the server on first attestation, or allow an http:// "
        "--trust-bundle-url (development only)",
    )
    run.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")

    api = commands.add_parser(
        "api",
        help="talk to the Workload API",
        description="Workload API client commands (socket: --socket or SPIFFE_ENDPOINT_SOCKET).",
    )
    api_commands = api.add_subparsers(dest="api_command", required=True, metavar="COMMAND")
    fetch = api_commands.add_parser(
        "fetch",
        help="fetch from the Workload API",
        description="Fetch SVIDs from the Workload API.",
    )
    fetch_kinds = fetch.add_subparsers(dest="kind", required=True, metavar="KIND")
    x509 = fetch_kinds.add_parser(
        "x509", help="fetch X.509-SVIDs", description="Fetch X.509-SVIDs and print them."
    )
    _socket_flags(x509)
    x509.add_argument("--write", metavar="DIR", help="write the SVIDs, keys and bundles to DIR")
    jwt = fetch_kinds.add_parser(
        "jwt",
        help="fetch JWT-SVIDs",
        description="Fetch JWT-SVIDs for an audience and print them with the JWT bundles.",
    )
    _socket_flags(jwt)
    jwt.add_argument(
        "--audience", action="append", required=True, metavar="AUD", help="audience (repeatable)"
    )
    jwt.add_argument("--spiffe-id", default="", metavar="ID", help="only this SPIFFE ID's SVID")

    validate = api_commands.add_parser(
        "validate",
        help="validate through the Workload API",
        description="Have the Workload API validate an SVID.",
    )
    validate_kinds = validate.add_subparsers(dest="kind", required=True, metavar="KIND")
    validate_jwt = validate_kinds.add_parser(
        "jwt",
        help="validate a JWT-SVID",
        description="Validate a JWT-SVID for an audience; exit 1 when it is not valid.",
    )
    _socket_flags(validate_jwt)
    validate_jwt.add_argument("--audience", required=True, metavar="AUD", help="your audience")
    validate_jwt.add_argument("--svid", required=True, metavar="TOKEN", help="the JWT-SVID")

    watch = api_commands.add_parser(
        "watch",
        help="print every X.509-SVID update",
        description="Stream FetchX509SVID and print each update until Ctrl-C.",
    )
    _socket_flags(watch)
    watch.add_argument("--count", type=int, metavar="N", help="stop after N updates")

    health = commands.add_parser(
        "healthcheck",
        help="check the Workload API answers",
        description="Exit 0 when the Workload API answers.",
    )
    _socket_flags(health)
    return parser


def _socket_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="Workload API socket (unix:/path or /path); default: $SPIFFE_ENDPOINT_SOCKET",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds to wait for an answer (default 5)",
    )


async def _run_agent(config: AgentConfig) -> int:
    from agent.config import workload_attestors_of
    from agent.manager import AgentError, AgentManager
    from agent.state import AgentState
    from agent.store import ensure_data_dir
    from agent.workload.server import WorkloadApiServer

    ensure_data_dir(config.data_dir)
    state = AgentState()
    manager = AgentManager(config, state)
    server = WorkloadApiServer(
        state,
        socket_path=config.socket,
        max_exe_hash_bytes=config.max_exe_hash_bytes,
        svid_wait=config.svid_wait,
        jwt_svids=manager.jwt_cache,
        compose_attestor=workload_attestors_of(config).bind,
    )
    await server.start()
    task = asyncio.ensure_future(manager.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        logging.getLogger("hallmark.agent").info("stopping")
        return 0
    except AgentError as exc:
        logging.getLogger("hallmark.agent").error("%s", exc.detail)
        return 1
    finally:
        await server.stop()
    return 0


def _with_code(exc: HallmarkError) -> str:
    """The message, led by its stable code (once: some messages already start with it)."""
    if exc.detail.startswith(exc.code + ":"):
        return exc.detail
    return f"{exc.code}: {exc.detail}"


def _command_run(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in RUN_FLAGS}
    flags["log_level"] = args.log_level
    try:
        config = AgentConfig.load(flags, args.config)
    except ConfigError as exc:
        print(f"hallmark-agent: {_with_code(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.join_token:
        logging.getLogger("hallmark.agent").warning(
            "the join token was given on the command line, where local users can read it; "
            "use --join-token-file or HALLMARK_JOIN_TOKEN"
        )
    # The agent's modules (gRPC, protobuf, cryptography): out of the collector's full passes,
    # which would otherwise pause Workload API calls.
    freeze_startup_objects()
    try:
        return asyncio.run(_run_agent(config))
    except HallmarkError as exc:
        print(f"hallmark-agent: {_with_code(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _command_api(args: argparse.Namespace) -> int:
    from agent.workload import jwtfetch
    from agent.workload.fetch import FetchError, run_fetch_x509

    what = " ".join(w for w in (args.api_command, getattr(args, "kind", "")) if w)
    try:
        if args.api_command == "watch":
            jwtfetch.watch_x509(args.socket, args.count, args.timeout, sys.stdout)
        elif args.api_command == "validate":
            spiffe_id, claims = jwtfetch.validate_jwt(
                args.socket, args.audience, args.svid, args.timeout
            )
            jwtfetch.print_validation(spiffe_id, claims, sys.stdout)
        elif args.kind == "jwt":
            svids, bundles = jwtfetch.fetch_jwt(
                args.socket, args.audience, args.spiffe_id, args.timeout
            )
            jwtfetch.print_jwt(svids, bundles, sys.stdout)
        else:
            run_fetch_x509(args.socket, args.write, args.timeout, sys.stdout)
    except KeyboardInterrupt:
        return 0
    except (FetchError, HallmarkError, OSError) as exc:
        if args.api_command == "validate":
            print(f"hallmark-agent: SVID is not valid: {exc}", file=sys.stderr)
        else:
            print(f"hallmark-agent: {what} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _command_healthcheck(args: argparse.Namespace) -> int:
    from agent.workload.fetch import FetchError, health

    try:
        health(args.socket, args.timeout)
    except FetchError as exc:
        print(f"Agent is unhealthy: {exc}", file=sys.stderr)
        return 1
    print("Agent is healthy.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _command_run(args)
    if args.command == "api":
        return _command_api(args)
    return _command_healthcheck(args)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
