"""`hallmark federation create|list|show|update|delete|refresh`, as `spire-server federation`."""

from __future__ import annotations

import argparse
from typing import Any

from config.spirecli.api import Api, part
from config.spirecli.bundle import FORMATS, read_bundle, trust_domain_name
from config.spirecli.credentials import resolve
from config.spirecli.flags import FlagParser, UsageError
from config.spirecli.output import block, emit_or, found, out

PROFILES = ("https_web", "https_spiffe")


def register(groups: argparse._SubParsersAction, summary: str) -> None:  # type: ignore[type-arg]
    group = groups.add_parser(
        "federation", help=summary, description="Federation relationships with other trust domains."
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="create a federation relationship",
        description="Federate with -trustDomain: where to refresh its bundle from "
        "(-bundleEndpointURL, -bundleEndpointProfile), and/or its bundle now "
        "(-trustDomainBundlePath).",
    )
    _relationship_flags(create)
    create.set_defaults(run=_create)

    update = actions.add_parser(
        "update",
        help="update a federation relationship",
        description="Change the relationship with -trustDomain: only the flags given change.",
    )
    _relationship_flags(update)
    update.set_defaults(run=_update)

    listing = actions.add_parser("list", help="list federation relationships")
    listing.output_flag()
    listing.set_defaults(run=_list)

    for name, line in (
        ("show", "show a federation relationship"),
        ("delete", "delete a federation relationship"),
        ("refresh", "fetch the trust domain's bundle from its endpoint now"),
    ):
        command = actions.add_parser(name, help=line, description=line[0].upper() + line[1:] + ".")
        command.flag("id", metavar="TD", help="the trust domain (or its SPIFFE ID)")
        command.flag("trustDomain", metavar="TD", help="the same as -id")
        command.output_flag()
        command.set_defaults(run=_one, action=name)


def _relationship_flags(parser: FlagParser) -> None:
    parser.flag("trustDomain", metavar="TD", help="the trust domain to federate with")
    parser.flag(
        "bundleEndpointURL", metavar="URL", help="URL of the trust domain's bundle endpoint"
    )
    parser.flag(
        "bundleEndpointProfile",
        choices=PROFILES,
        help="https_web (Web PKI; the default) or https_spiffe (needs -endpointSpiffeID)",
    )
    parser.flag(
        "endpointSpiffeID",
        metavar="ID",
        help="SPIFFE ID of the bundle endpoint server (https_spiffe)",
    )
    parser.flag(
        "trustDomainBundlePath",
        metavar="FILE",
        help="the trust domain's bundle now (its first bundle for https_spiffe)",
    )
    parser.flag(
        "trustDomainBundleFormat",
        choices=FORMATS,
        default="pem",
        help="format of -trustDomainBundlePath: pem (default) or spiffe",
    )
    parser.output_flag()


def _fields(args: argparse.Namespace, name: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.bundleEndpointURL is not None:
        fields["bundle_endpoint_url"] = args.bundleEndpointURL
    if args.bundleEndpointProfile is not None:
        fields["bundle_endpoint_profile"] = args.bundleEndpointProfile
    if args.endpointSpiffeID is not None:
        fields["endpoint_spiffe_id"] = args.endpointSpiffeID
    if args.trustDomainBundlePath is not None:
        fields["trust_domain_bundle"] = read_bundle(
            name, args.trustDomainBundlePath, args.trustDomainBundleFormat
        )
    return fields


def _create(args: argparse.Namespace) -> int:
    name = trust_domain_name(args.trustDomain, "-trustDomain")
    fields = _fields(args, name)
    if "bundle_endpoint_url" not in fields and "trust_domain_bundle" not in fields:
        raise UsageError("give -bundleEndpointURL, -trustDomainBundlePath, or both")
    answer = Api.with_token(resolve()).post(
        "federation-relationships", {"trust_domain": name, **fields}
    )
    emit_or(answer, lambda: _created("created", answer), args.output)
    return 0


def _update(args: argparse.Namespace) -> int:
    name = trust_domain_name(args.trustDomain, "-trustDomain")
    fields = _fields(args, name)
    if not fields:
        raise UsageError("nothing to change: give at least one flag besides -trustDomain")
    answer = Api.with_token(resolve()).patch(f"federation-relationships/{part(name)}", fields)
    emit_or(answer, lambda: _created("updated", answer), args.output)
    return 0


def _created(verb: str, relationship: dict[str, Any]) -> None:
    out(f"Federation relationship {verb}:")
    out("")
    print_relationship(relationship)


def _list(args: argparse.Namespace) -> int:
    relationships = list(Api.with_token(resolve()).list_all("federation-relationships"))

    def pretty() -> None:
        found(len(relationships), "federation relationship", "federation relationships")
        for relationship in relationships:
            print_relationship(relationship)

    emit_or({"federation_relationships": relationships}, pretty, args.output)
    return 0


def _one(args: argparse.Namespace) -> int:
    if args.id and args.trustDomain and args.id != args.trustDomain:
        raise UsageError("-id and -trustDomain name different trust domains")
    name = trust_domain_name(args.id or args.trustDomain)
    api = Api.with_token(resolve())
    path = f"federation-relationships/{part(name)}"
    if args.action == "show":
        answer = api.get(path)
        emit_or(answer, lambda: print_relationship(answer), args.output)
    elif args.action == "delete":
        api.delete(path)
        emit_or({"deleted": name}, lambda: out("federation relationship deleted."), args.output)
    else:
        # Built by the federation refresh work: 200 with the relationship, or 502
        # bundle_endpoint_error (the last good bundle is kept).
        answer = api.post(f"{path}/refresh")
        emit_or(answer, lambda: _refreshed(answer), args.output)
    return 0


def _refreshed(relationship: dict[str, Any]) -> None:
    out("Bundle refreshed")
    out("")
    print_relationship(relationship)


def print_relationship(relationship: dict[str, Any]) -> None:
    rows: list[tuple[str, Any]] = [
        ("Trust domain", relationship["trust_domain"]),
        ("Bundle endpoint URL", relationship.get("bundle_endpoint_url") or "-"),
        ("Bundle endpoint profile", relationship.get("bundle_endpoint_profile", "")),
    ]
    if relationship.get("endpoint_spiffe_id"):
        rows.append(("Endpoint SPIFFE ID", relationship["endpoint_spiffe_id"]))
    rows.append(("Bundle sequence", relationship.get("bundle_sequence", 0)))
    for label, key in (
        ("Bundle updated at", "bundle_updated_at"),
        ("Last refresh at", "last_refresh_at"),
        ("Next refresh at", "next_refresh_at"),
        ("Last error", "last_error"),
    ):
        if relationship.get(key):
            rows.append((label, relationship[key]))
    block(rows, width=26)
