"""`hallmark token generate`: a join token, as `spire-server token generate`."""

from __future__ import annotations

import argparse

from config.spirecli.api import Api
from config.spirecli.credentials import resolve
from config.spirecli.flags import UsageError
from config.spirecli.output import emit_or, out

DEFAULT_TTL = 600  # seconds, as SPIRE


def register(groups: argparse._SubParsersAction, summary: str) -> None:  # type: ignore[type-arg]
    group = groups.add_parser("token", help=summary, description="Join tokens for agents.")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate",
        help="generate a join token",
        description="Make a single-use join token (shown once). With -spiffeID the agent that "
        "redeems it is also known by that SPIFFE ID (a node alias), so workloads can be "
        "registered under it before the agent exists.",
    )
    generate.flag("spiffeID", metavar="ID", help="additional SPIFFE ID to assign the token owner")
    generate.flag(
        "ttl",
        type=int,
        default=DEFAULT_TTL,
        metavar="SECONDS",
        help=f"token TTL in seconds (default {DEFAULT_TTL})",
    )
    generate.output_flag()
    generate.set_defaults(run=_generate)


def _generate(args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        raise UsageError("-ttl must be a positive number of seconds")
    body: dict[str, object] = {"ttl": args.ttl}
    if args.spiffeID:
        body["spiffe_id"] = args.spiffeID
    answer = Api.with_token(resolve()).post("join-tokens", body)
    emit_or(answer, lambda: out(f"Token: {answer['token']}"), args.output)
    return 0
