"""`hallmark agent list|show|ban|evict`, as `spire-server agent`; agents named by SPIFFE ID."""

from __future__ import annotations

import argparse
from typing import Any

from config.spirecli.api import Api, ApiError, part
from config.spirecli.credentials import resolve
from config.spirecli.flags import UsageError
from config.spirecli.output import block, emit_or, out, plural


def register(groups: argparse._SubParsersAction, summary: str) -> None:  # type: ignore[type-arg]
    group = groups.add_parser("agent", help=summary, description="Attested agents.")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="list attested agents", description="List the tenant's attested agents."
    )
    listing.output_flag()
    listing.set_defaults(run=_list)
    for name, summary_line, description in (
        ("show", "show an attested agent", "Show the agent with -spiffeID."),
        (
            "ban",
            "ban an attested agent",
            "Ban the agent with -spiffeID: it gets nothing more and cannot attest again "
            "with the same identity.",
        ),
        (
            "evict",
            "evict an attested agent",
            "Evict (delete) the agent with -spiffeID; it may attest again.",
        ),
    ):
        command = actions.add_parser(name, help=summary_line, description=description)
        command.flag("spiffeID", metavar="ID", help="the SPIFFE ID of the agent")
        command.output_flag()
        command.set_defaults(run=_one, action=name)


def _list(args: argparse.Namespace) -> int:
    agents = list(Api.with_token(resolve()).list_all("agents"))

    def pretty() -> None:
        if not agents:
            out("No attested agents found")
            return
        out(f"Found {plural(len(agents), 'attested agent', 'attested agents')}:")
        out("")
        for agent in agents:
            print_agent(agent)

    emit_or({"agents": agents}, pretty, args.output)
    return 0


def _one(args: argparse.Namespace) -> int:
    if not args.spiffeID:
        raise UsageError("-spiffeID is required: the SPIFFE ID of the agent")
    api = Api.with_token(resolve())
    agent = find_agent(api, args.spiffeID)
    if args.action == "show":
        emit_or(agent, lambda: print_agent(agent), args.output)
    elif args.action == "ban":
        banned = api.post(f"agents/{part(agent['id'])}/ban")
        emit_or(banned, lambda: out("Agent banned successfully"), args.output)
    else:
        api.delete(f"agents/{part(agent['id'])}")
        emit_or(
            {"evicted": agent["spiffe_id"]},
            lambda: out("Agent evicted successfully"),
            args.output,
        )
    return 0


def find_agent(api: Api, spiffe_id: str) -> dict[str, Any]:
    for agent in api.list_all("agents"):
        if agent["spiffe_id"] == spiffe_id:
            return dict(agent)
    raise ApiError(0, "not_found", f"no attested agent has SPIFFE ID {spiffe_id}")


def print_agent(agent: dict[str, Any]) -> None:
    rows: list[tuple[str, Any]] = [
        ("SPIFFE ID", agent["spiffe_id"]),
        ("Attestation type", agent.get("attestation_type", "")),
        ("Expiration time", agent.get("expires_at") or "-"),
    ]
    if agent.get("banned"):
        rows.append(("Banned", "true"))
    else:
        rows.append(("Serial number", agent.get("serial", "")))
    rows.append(("Can re-attest", "false" if agent.get("banned") else "true"))
    rows += [("Node alias", alias) for alias in agent.get("node_aliases") or []]
    block(rows, width=18)
