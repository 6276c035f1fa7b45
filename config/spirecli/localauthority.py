"""`hallmark localauthority x509|jwt show|prepare|activate|taint|revoke`, as SPIRE's."""

from __future__ import annotations

import argparse
from typing import Any

from config.spirecli.api import Api, part
from config.spirecli.credentials import resolve
from config.spirecli.flags import UsageError
from config.spirecli.output import emit_or, out

KINDS = {"x509": "X.509", "jwt": "JWT"}
STATES = ("active", "prepared", "old")
DONE = {"activate": "Activated", "taint": "Tainted", "revoke": "Revoked", "prepare": "Prepared"}


def register(groups: argparse._SubParsersAction, summary: str) -> None:  # type: ignore[type-arg]
    group = groups.add_parser(
        "localauthority",
        help=summary,
        description="The trust domain's X.509 CAs and JWT signing keys: show the journal "
        "(active, prepared, old) and force rotation. The usual order is prepare, activate "
        "(the prepared one), taint (the old one: agents renew what it signed), revoke (the "
        "tainted one: it leaves the bundle).",
    )
    kinds = group.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, label in KINDS.items():
        parser = kinds.add_parser(kind, help=f"{label} authorities")
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        show = actions.add_parser("show", help=f"show the {label} authorities")
        show.output_flag()
        show.set_defaults(run=_show)
        prepare = actions.add_parser(
            "prepare", help=f"prepare a new {label} authority (published, not signing yet)"
        )
        prepare.output_flag()
        prepare.set_defaults(run=_operate, operation="prepare")
        for operation, line in (
            ("activate", "start signing with the prepared authority"),
            ("taint", "taint the old authority: agents renew what it signed"),
            ("revoke", "revoke a tainted authority: it leaves the bundle"),
        ):
            command = actions.add_parser(operation, help=line)
            command.flag("authorityID", metavar="ID", help="the authority's ID (see show)")
            command.output_flag()
            command.set_defaults(run=_operate, operation=operation)


def _authorities(args: argparse.Namespace) -> list[dict[str, Any]]:
    trust_domain = Api.with_token(resolve()).get("trust-domain")
    return list(trust_domain[f"{args.kind}_authorities"])


def _show(args: argparse.Namespace) -> int:
    authorities = _authorities(args)
    grouped = {state: [a for a in authorities if a["status"] == state] for state in STATES}
    label = KINDS[args.kind]

    def pretty() -> None:
        for state in STATES:
            out(f"{state.capitalize()} {label} authority:")
            if not grouped[state]:
                out(f"  No {state} {label} authority found")
            for authority in grouped[state]:
                print_authority(authority)
            out("")

    emit_or(grouped, pretty, args.output)
    return 0


def _operate(args: argparse.Namespace) -> int:
    base = f"trust-domain/{args.kind}-authorities"
    api = Api.with_token(resolve())
    if args.operation == "prepare":
        answer = api.post(f"{base}/prepare")
    else:
        if not args.authorityID:
            raise UsageError(
                f"-authorityID is required (`hallmark localauthority {args.kind} show` lists them)"
            )
        answer = api.post(f"{base}/{part(args.authorityID)}/{args.operation}")

    def pretty() -> None:
        out(f"{DONE[args.operation]} {KINDS[args.kind]} authority:")
        print_authority(answer)

    emit_or(answer, pretty, args.output)
    return 0


def print_authority(authority: dict[str, Any]) -> None:
    out(f"  Authority ID: {authority['id']}")
    if authority.get("key_id"):
        out(f"  Key ID: {authority['key_id']}")
    out(f"  Expires at: {authority.get('not_after', '-')}")
    if authority.get("tainted"):
        out("  Tainted: true")
    if authority.get("revoked"):
        out("  Revoked: true")
    if authority.get("upstream_authority"):
        out(f"  Upstream authority: {authority['upstream_authority']}")
