"""The `hallmark` command: run the control plane, the demo, and its internal processes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from config.spirecli import GROUPS as API_COMMANDS
from config.spirecli import main as api_command


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8000)")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hallmark",
        description="Hallmark: a multi-tenant SPIFFE identity service (the control plane).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--data-dir",
            type=Path,
            default=Path(os.environ.get("HALLMARK_DATA_DIR", ".hallmark")),
            help="where embedded servers and logs live (default: .hallmark)",
        )
        sub.add_argument(
            "--http",
            type=_address,
            default=("127.0.0.1", 8000),
            help="REST API address (default 127.0.0.1:8000)",
        )
        sub.add_argument(
            "--grpc",
            type=_address,
            default=("127.0.0.1", 8081),
            help="agent API address (default 127.0.0.1:8081)",
        )
        sub.add_argument(
            "--bundle-endpoint",
            type=_address,
            default=("127.0.0.1", 8443),
            help="https_spiffe bundle endpoint address (default 127.0.0.1:8443)",
        )
        metrics = os.environ.get("HALLMARK_METRICS_ADDR", "").strip()
        sub.add_argument(
            "--metrics",
            type=_address,
            default=_address(metrics) if metrics else None,
            metavar="HOST:PORT",
            help="serve Prometheus /metrics from this port on: web, agent API, worker and beat "
            "on PORT, PORT+1, PORT+2, PORT+3 (default $HALLMARK_METRICS_ADDR; unset: none)",
        )

    up = commands.add_parser(
        "up",
        help="run the whole control plane in the foreground",
        description="Run PostgreSQL/Redis/OpenBao (embedded unless "
        "HALLMARK_DATABASE_URL/HALLMARK_REDIS_URL/HALLMARK_VAULT_ADDR are "
        "set), the REST API, the agent API, a Celery worker and beat.",
    )
    common(up)
    demo = commands.add_parser(
        "demo",
        help="up + sign up a tenant + agent + fetch SVIDs",
        description="Start the control plane, sign up a tenant, register "
        "a workload, start an agent and fetch an X.509-SVID through the "
        "SPIFFE Workload API.",
    )
    common(demo)
    demo.add_argument("--exit", action="store_true", help="stop everything and exit 0 when done")
    agent_api = commands.add_parser("agent-api", help="(internal) serve the agent gRPC API")
    agent_api.add_argument("--listen", type=_address, default=("127.0.0.1", 8081))
    agent_api.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other agent-api processes of this user (SO_REUSEPORT); "
        "`hallmark up` runs HALLMARK_AGENT_API_PROCESSES of them this way",
    )
    bundle_endpoint = commands.add_parser(
        "bundle-endpoint", help="(internal) serve the https_spiffe bundle endpoint"
    )
    bundle_endpoint.add_argument("--listen", type=_address, default=("127.0.0.1", 8443))
    bundle_endpoint.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other bundle-endpoint processes (SO_REUSEPORT)",
    )
    commands.add_parser("migrate", help="apply database migrations to public and tenant schemas")
    commands.add_parser(
        "check",
        help="preflight: can this configuration reach PostgreSQL, Redis, Vault and PKCS#11?",
        description="Connect to the PostgreSQL, Redis, Vault/OpenBao and PKCS#11 module that "
        "HALLMARK_* configures, say what is wrong in plain words, and exit non-zero if "
        "anything is. Starts no server: run it before a rollout.",
    )
    operator = commands.add_parser(
        "operator",
        help="platform operators: create one, print an operator API token",
        description="Work on the platform's own database (the embedded servers of a running "
        "`hallmark up` under HALLMARK_DATA_DIR, or the HALLMARK_* servers).",
    )
    operator_commands = operator.add_subparsers(dest="operator_command", required=True)
    operator_create = operator_commands.add_parser("create", help="make a platform operator")
    operator_create.add_argument("--email", required=True)
    operator_create.add_argument(
        "--password-file",
        type=Path,
        help="a file holding the operator's password (first line); without it the operator "
        "signs in with tokens only",
    )
    operator_token = operator_commands.add_parser(
        "token", help="print a new API token of an operator (shown once)"
    )
    operator_token.add_argument("--email", required=True)
    audit = commands.add_parser("audit", help="the audit trail: verify its hash chains")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_commands.add_parser(
        "verify",
        help="re-hash each chain and check it against its signed checkpoints (exit 1 if bad)",
    )
    verify.add_argument("--tenant", metavar="SLUG", help="only this tenant's chain")
    verify.add_argument("--json", action="store_true", help="one JSON object a chain")
    manage = commands.add_parser("manage", help="run a Django management command")
    manage.add_argument("args", nargs=argparse.REMAINDER)
    # SPIRE-style commands over the REST API (config/spirecli, no Django): listed here for
    # `hallmark --help`, parsed and run by config.spirecli.main (see main() below).
    for name, (summary, _register) in API_COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def _django() -> None:
    """Set Django up, first starting (or joining) the embedded servers it needs, if any."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config import embedded, env

    embedded.ensure_started(env.data_dir())
    import django

    django.setup()


def _up_or_demo(args: argparse.Namespace) -> int:
    from config.supervisor import ControlPlane, stop_on_signals

    if args.command == "demo":
        # The demo may offer the embedded upstream; `up` leaves that to the operator.
        os.environ.setdefault("HALLMARK_EMBEDDED_UPSTREAM", "true")

    plane = ControlPlane(
        data_dir=args.data_dir.resolve(),
        http=args.http,
        grpc=args.grpc,
        bundle_endpoint=args.bundle_endpoint,
        metrics=args.metrics,
    )
    with stop_on_signals(plane):
        plane.start()
        if args.command == "up":
            plane.print_ready()
            plane.wait()
        else:
            from config.demo import run_demo

            run_demo(plane)
            if not args.exit:
                plane.print_ready()
                plane.wait()
    return 0


def _agent_api(args: argparse.Namespace) -> int:
    _django()
    from config import metrics, tracing
    from config.health import start_heartbeat
    from hallmark.startup import freeze_startup_objects
    from issuance.agentapi.server import serve

    # Processes sharing the gRPC port share the metrics port too; any of them answers the sum.
    metrics.serve_from_environment(reuse_port=args.reuse_port)
    tracing.configure("agent-api")
    freeze_startup_objects()  # Django and the servicer's modules: out of the collector's way
    serve(
        args.listen[0],
        args.listen[1],
        reuse_port=args.reuse_port,
        on_listening=lambda: start_heartbeat("agent-api"),
    )
    metrics.mark_process_dead()
    return 0


def _bundle_endpoint(args: argparse.Namespace) -> int:
    _django()
    from config.health import start_heartbeat
    from federation.endpoint import serve
    from issuance.agentapi.tls import TenantCredentials
    from issuance.agentapi.tlsbuild import BUNDLE_ENDPOINT

    # The agent API's per-tenant server SVID machinery, in its bundle-endpoint profile.
    serve(
        TenantCredentials(profile=BUNDLE_ENDPOINT),
        args.listen[0],
        args.listen[1],
        reuse_port=args.reuse_port,
        on_listening=lambda: start_heartbeat("bundle-endpoint"),
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from config.preflight import report, run_checks

    try:
        text, status = report(run_checks(settings))
    except ImproperlyConfigured as exc:
        text, status = f"FAIL configuration: {exc}", 1
    print(text)
    return status


def _migrate(args: argparse.Namespace) -> int:
    _django()
    from django.core.management import call_command

    from tenants.migrating import SchemasFailedToMigrate, migrate_tenant_schemas
    from tenants.schemas import migrate_template

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=1)
    migrate_template(verbosity=1)  # new tenant schemas are copies of it
    try:
        migrate_tenant_schemas(progress=lambda line: print(f"hallmark migrate: {line}"))
    except SchemasFailedToMigrate as failure:
        print(f"hallmark migrate: {failure}", file=sys.stderr)
        return 1
    return 0


def _operator(args: argparse.Namespace) -> int:
    password = None
    if getattr(args, "password_file", None) is not None:
        try:
            password = args.password_file.read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            print(f"hallmark operator: cannot read the password file: {exc}", file=sys.stderr)
            return 2
    _django()
    from tenants import operators
    from tenants.api.errors import ApiError

    try:
        if args.operator_command == "create":
            operator = operators.create_operator(email=args.email, password=password)
            print(f"operator {operator.email} created")
        else:
            print(operators.issue_operator_token(email=args.email))
    except ApiError as exc:
        print(f"hallmark operator: {exc.error_code}: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def _audit(args: argparse.Namespace) -> int:
    _django()
    from tenants.audit.commands import verify_command

    return verify_command(
        tenant_slug=args.tenant, as_json=args.json, out=sys.stdout, err=sys.stderr
    )


def _manage(args: argparse.Namespace) -> int:
    _django()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["hallmark manage", *args.args])
    return 0


COMMANDS = {
    "up": _up_or_demo,
    "demo": _up_or_demo,
    "agent-api": _agent_api,
    "bundle-endpoint": _bundle_endpoint,
    "check": _check,
    "migrate": _migrate,
    "manage": _manage,
    "operator": _operator,
    "audit": _audit,
}


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in API_COMMANDS:
        return api_command(words)
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
