"""`hallmark bundle show|list|set|delete`, as `spire-server bundle`.

`show` is the tenant's own bundle. Federated bundles live in federation relationships
(`trust_domain_bundle`): `set` creates the relationship or replaces its bundle, `list` prints
every relationship's bundle, `delete` ends a relationship that only holds a set bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from config.spirecli.api import Api, ApiError, part
from config.spirecli.credentials import resolve
from config.spirecli.flags import UsageError
from config.spirecli.output import emit_json, emit_or, out

FORMATS = ("pem", "spiffe")
BANNER = "*" * 40


def register(groups: argparse._SubParsersAction, summary: str) -> None:  # type: ignore[type-arg]
    group = groups.add_parser("bundle", help=summary, description=__doc__)
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    show = actions.add_parser(
        "show", help="print this trust domain's bundle", description="GET /api/v1/bundle."
    )
    _format_flag(show)
    show.output_flag()
    show.set_defaults(run=_show)

    listing = actions.add_parser(
        "list",
        help="print federated bundles",
        description="The bundles of the federation relationships (all, or -id's).",
    )
    listing.flag("id", metavar="TD", help="the trust domain (or its SPIFFE ID) to print")
    _format_flag(listing)
    listing.output_flag()
    listing.set_defaults(run=_list)

    setting = actions.add_parser(
        "set",
        help="set a federated bundle",
        description="Set the bundle of trust domain -id from -path (or stdin): creates the "
        "federation relationship if there is none, else replaces its bundle.",
    )
    setting.flag("id", metavar="TD", help="the trust domain (or its SPIFFE ID)")
    setting.flag("path", metavar="FILE", help="the bundle file (default: stdin)")
    _format_flag(setting)
    setting.output_flag()
    setting.set_defaults(run=_set)

    delete = actions.add_parser(
        "delete",
        help="delete a federated bundle",
        description="Delete trust domain -id's bundle and the relationship holding it. A "
        "relationship refreshed from a bundle endpoint is left alone: end it with "
        "`hallmark federation delete -id TD`.",
    )
    delete.flag("id", metavar="TD", help="the trust domain (or its SPIFFE ID)")
    delete.output_flag()
    delete.set_defaults(run=_delete)


def _format_flag(parser: Any) -> None:
    parser.flag(
        "format", choices=FORMATS, default="pem", help="pem (default) or spiffe (JSON bundle)"
    )


def trust_domain_name(text: str | None, flag: str = "-id") -> str:
    if not text:
        raise UsageError(f"{flag} is required: the trust domain (e.g. example.org)")
    name = text.removeprefix("spiffe://").rstrip("/")
    if not name or "/" in name:
        raise UsageError(f"{flag} {text!r} is a trust domain name or spiffe://<name>, no path")
    return name


def pem_of(trust_domain: str, document: Any) -> str:
    """The X.509 authorities of a SPIFFE bundle document as PEM."""
    from hallmark.bundle import Bundle
    from hallmark.errors import HallmarkError
    from hallmark.spiffeid import TrustDomain

    try:
        return Bundle.parse(TrustDomain(trust_domain), document).x509_pem().decode()
    except HallmarkError as exc:
        raise ApiError(0, "unexpected_answer", f"{trust_domain}'s bundle: {exc}") from None


def read_bundle(trust_domain: str, path: str | None, form: str) -> dict[str, Any]:
    """A bundle file as the SPIFFE bundle document the API takes (PEM → x509-svid keys)."""
    try:
        raw = sys.stdin.buffer.read() if path in (None, "-") else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if form == "spiffe":
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"{path or 'stdin'} is not a SPIFFE bundle (JSON): {exc}") from None
        if not isinstance(document, dict):
            raise UsageError(f"{path or 'stdin'} is not a SPIFFE bundle (a JSON object)")
        return document
    from hallmark.bundle import Bundle, load_pem_certificates
    from hallmark.errors import HallmarkError
    from hallmark.spiffeid import TrustDomain

    try:
        certificates = load_pem_certificates(raw)
        bundle = Bundle(
            TrustDomain(trust_domain), x509_authorities=tuple(certificates), refresh_hint=None
        )
        return bundle.to_jwks()
    except HallmarkError as exc:
        raise UsageError(f"{path or 'stdin'}: {exc.detail} (use -format spiffe for JSON)") from None


def _show(args: argparse.Namespace) -> int:
    api = Api.with_token(resolve())
    if args.format == "pem" and args.output != "json":
        # errors still come as JSON {code, detail}
        answer = api.call(
            "GET",
            "bundle",
            query={"format": "pem"},
            accept="application/x-pem-file, application/json;q=0.5",
        )
        out(str(answer.body).rstrip("\n"))
    else:
        emit_json(api.get("bundle"))
    return 0


def _list(args: argparse.Namespace) -> int:
    api = Api.with_token(resolve())
    if args.id:
        relationships = [api.get(f"federation-relationships/{part(trust_domain_name(args.id))}")]
    else:
        relationships = list(api.list_all("federation-relationships"))
    held = [r for r in relationships if r.get("bundle")]

    def pretty() -> None:
        for relationship in held:
            name = relationship["trust_domain"]
            out(BANNER)
            out(f"* spiffe://{name}")
            out(BANNER)
            if args.format == "pem":
                out(pem_of(name, relationship["bundle"]))
            else:
                out(json.dumps(relationship["bundle"], indent=2, sort_keys=True))
                out("")

    emit_or(
        {"bundles": [{"trust_domain": r["trust_domain"], "bundle": r["bundle"]} for r in held]},
        pretty,
        args.output,
    )
    return 0


def _set(args: argparse.Namespace) -> int:
    name = trust_domain_name(args.id)
    document = read_bundle(name, args.path, args.format)
    api = Api.with_token(resolve())
    try:
        api.get(f"federation-relationships/{part(name)}")
    except ApiError as missing:
        if missing.code != "not_found":
            raise
        answer = api.post(
            "federation-relationships", {"trust_domain": name, "trust_domain_bundle": document}
        )
    else:
        answer = api.patch(
            f"federation-relationships/{part(name)}", {"trust_domain_bundle": document}
        )
    emit_or(answer, lambda: out("bundle set."), args.output)
    return 0


def _delete(args: argparse.Namespace) -> int:
    name = trust_domain_name(args.id)
    api = Api.with_token(resolve())
    relationship = api.get(f"federation-relationships/{part(name)}")
    if relationship.get("bundle_endpoint_url"):
        raise ApiError(
            0,
            "bundle_has_endpoint",
            f"{name}'s bundle is refreshed from {relationship['bundle_endpoint_url']}; "
            f"end the relationship with `hallmark federation delete -id {name}`",
        )
    api.delete(f"federation-relationships/{part(name)}")
    emit_or({"deleted": name}, lambda: out("bundle deleted."), args.output)
    return 0
