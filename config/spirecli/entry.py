"""`hallmark entry create|show|update|delete|count`, with spire-server entry's flags and output."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from config.spirecli.api import Api, part
from config.spirecli.credentials import resolve
from config.spirecli.flags import FAILED_EXIT, FlagParser, UsageError
from config.spirecli.output import block, emit_or, err, found, out, plural

BATCH_LIMIT = 500  # items per batch call (the API answers 400 batch_too_large above it)
MATCH_MODES = ("exact", "any", "superset", "subset")
# SPIRE's -data entry fields (its RegistrationEntry JSON) → the API's entry fields.
DATA_FIELDS = {
    "spiffe_id": "spiffe_id",
    "parent_id": "parent_id",
    "selectors": "selectors",
    "x509_svid_ttl": "x509_svid_ttl",
    "jwt_svid_ttl": "jwt_svid_ttl",
    "ttl": "x509_svid_ttl",  # SPIRE's older single TTL
    "dns_names": "dns_names",
    "federates_with": "federates_with",
    "admin": "admin",
    "downstream": "downstream",
    "hint": "hint",
    "entryExpiry": "expires_at",
    "entry_expiry": "expires_at",
    "expires_at": "expires_at",
}
# Fields an exported entry carries that the server sets itself.
READ_ONLY_FIELDS = {
    "revision_number",
    "revision",
    "created_at",
    "updated_at",
    "store_svid",
    "type",
}
ID_FIELDS = ("id", "entry_id")


def register(groups: argparse._SubParsersAction, summary: str) -> None:  # type: ignore[type-arg]
    group = groups.add_parser(
        "entry",
        help=summary,
        description="Registration entries, as `spire-server entry`: create, show, update, "
        "delete and count, over the REST API.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="create registration entries",
        description="Create one entry from flags, or many from -data FILE (SPIRE's JSON "
        '{"entries": [...]}; - reads stdin) through POST /api/v1/entries/batch-create. '
        "Each entry's result is printed; any failure exits 1.",
    )
    _entry_flags(create, update=False)
    create.set_defaults(run=_create)

    update = actions.add_parser(
        "update",
        help="update registration entries",
        description="Change the entry -entryID: only the flags given change (-admin=false and "
        "-downstream=false clear those; -entryExpiry 0 clears the expiry). -data FILE updates "
        "many (each entry names its entry_id) through POST /api/v1/entries/batch-update.",
    )
    _entry_flags(update, update=True)
    update.set_defaults(run=_update)

    show = actions.add_parser(
        "show",
        help="show registration entries",
        description="Show entries: all, or those matching every filter given.",
    )
    show.flag("entryID", metavar="ID", help="the entry ID of the record to show")
    _filter_flags(show)
    show.output_flag()
    show.set_defaults(run=_show)

    count = actions.add_parser(
        "count", help="count registration entries", description="Count entries matching filters."
    )
    _filter_flags(count)
    count.output_flag()
    count.set_defaults(run=_count)

    delete = actions.add_parser(
        "delete",
        help="delete registration entries",
        description='Delete the entry -entryID, or those listed in -file FILE ({"ids": [...]}).',
    )
    delete.flag("entryID", metavar="ID", help="the registration entry ID of the record to delete")
    delete.flag(
        "file",
        metavar="FILE",
        help='a JSON file {"ids": [...]} for batch deletion ("-" reads stdin)',
    )
    delete.output_flag()
    delete.set_defaults(run=_delete)


def _entry_flags(parser: FlagParser, *, update: bool) -> None:
    what = "of the record to update" if update else "(assigned by Hallmark; not accepted)"
    parser.flag("entryID", metavar="ID", help=f"the registration entry ID {what}")
    parser.flag("spiffeID", metavar="ID", help="the SPIFFE ID that this record represents")
    parser.flag("parentID", metavar="ID", help="the SPIFFE ID of this record's parent")
    parser.bool_flag(
        "node",
        help="the entry applies to matching nodes: its parent is spiffe://<td>/spire/server",
    )
    parser.flag(
        "selector",
        action="append",
        metavar="TYPE:VALUE",
        help="a colon-delimited type:value selector; can be used more than once",
    )
    parser.flag(
        "x509SVIDTTL",
        type=int,
        metavar="SECONDS",
        help="lifetime of X509-SVIDs issued for this entry (0: the default)",
    )
    parser.flag(
        "jwtSVIDTTL",
        type=int,
        metavar="SECONDS",
        help="lifetime of JWT-SVIDs issued for this entry (0: the default)",
    )
    parser.flag(
        "dns",
        action="append",
        metavar="NAME",
        help="a DNS name included in X509-SVIDs of this entry; can be used more than once",
    )
    parser.flag(
        "federatesWith",
        action="append",
        metavar="TD",
        help="SPIFFE ID of a trust domain to federate with; can be used more than once",
    )
    parser.bool_flag("admin", help="the entry's SPIFFE ID may use admin APIs")
    parser.bool_flag("downstream", help="the entry describes a downstream SPIFFE server")
    parser.flag("hint", help="the entry hint, used to tell entries with the same SPIFFE ID apart")
    parser.flag(
        "entryExpiry",
        type=int,
        metavar="EPOCH",
        help="when the entry expires, in seconds since the epoch (0: never)",
    )
    parser.flag(
        "data",
        metavar="FILE",
        help='registration JSON {"entries": [...]} for a batch ("-" reads stdin)',
    )
    parser.output_flag()


def _filter_flags(parser: FlagParser) -> None:
    parser.flag("spiffeID", metavar="ID", help="the SPIFFE ID of the records")
    parser.flag("parentID", metavar="ID", help="the parent ID of the records")
    parser.flag(
        "selector",
        action="append",
        metavar="TYPE:VALUE",
        help="a colon-delimited type:value selector; can be used more than once",
    )
    parser.flag(
        "matchSelectorsOn",
        choices=MATCH_MODES,
        default="superset",
        help="how -selector matches: exact, any, superset (default) or subset",
    )
    parser.flag(
        "federatesWith",
        action="append",
        metavar="TD",
        help="SPIFFE ID of a trust domain the entry federates with; can be repeated",
    )
    parser.flag(
        "matchFederatesWithOn",
        choices=MATCH_MODES,
        default="superset",
        help="how -federatesWith matches: exact, any, superset (default) or subset",
    )
    parser.flag("hint", help="the hint of the records")
    parser.bool_flag("downstream", help="only entries that describe downstream servers")


# --- create / update -------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    if args.data:
        _no_field_flags(args, "create")
        items = [_from_data(item, index, keep_id=False) for index, item in _data(args.data)]
    else:
        if args.entryID:
            raise UsageError("Hallmark assigns entry IDs: -entryID is for update, show and delete")
        items = [_from_flags(args, update=False)]
    return _batch(
        args,
        call="batch-create",
        body={"entries": items},
        items=items,
        key="entries",
        verb="create",
        pretty=_print_results,
    )


def _update(args: argparse.Namespace) -> int:
    if args.data:
        _no_field_flags(args, "update")
        items = [_from_data(item, index, keep_id=True) for index, item in _data(args.data)]
    else:
        if not args.entryID:
            raise UsageError("-entryID is required: which entry to update")
        changes = _from_flags(args, update=True)
        if not changes:
            raise UsageError("nothing to change: give at least one field flag (e.g. -selector)")
        items = [{"id": args.entryID, **changes}]
    return _batch(
        args,
        call="batch-update",
        body={"entries": items},
        items=items,
        key="entries",
        verb="update",
        pretty=_print_results,
    )


def _from_flags(args: argparse.Namespace, *, update: bool) -> dict[str, Any]:
    fields = {**_identity_fields(args), **_svid_fields(args)}
    if args.hint is not None:
        fields["hint"] = args.hint
    if args.entryExpiry is not None:
        expiry = _expiry(args.entryExpiry, update=update)
        if expiry is not None or update:
            fields["expires_at"] = expiry
    if not update:
        missing = [
            flag
            for flag, name in (("-spiffeID", "spiffe_id"), ("-parentID", "parent_id"))
            if not fields.get(name)
        ]
        if missing:
            raise UsageError(f"{' and '.join(missing)} required (or -data FILE for a batch)")
        if not fields.get("selectors"):
            raise UsageError("at least one -selector is required")
    return fields


def _identity_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Who the entry is for: SPIFFE ID, parent (or -node) and selectors."""
    fields: dict[str, Any] = {}
    if args.spiffeID is not None:
        fields["spiffe_id"] = args.spiffeID
    if args.node:
        if args.parentID:
            raise UsageError("-node and -parentID exclude each other")
        if not args.spiffeID:
            raise UsageError("-node needs -spiffeID (its trust domain names the server)")
        fields["parent_id"] = _server_id(args.spiffeID)
    elif args.parentID is not None:
        fields["parent_id"] = args.parentID
    if args.selector is not None:
        fields["selectors"] = list(args.selector)
    return fields


def _svid_fields(args: argparse.Namespace) -> dict[str, Any]:
    """What its SVIDs carry: TTLs, DNS names, federation, admin and downstream."""
    fields: dict[str, Any] = {}
    for flag, name in (("x509SVIDTTL", "x509_svid_ttl"), ("jwtSVIDTTL", "jwt_svid_ttl")):
        value = getattr(args, flag)
        if value is not None:
            if value < 0:
                raise UsageError(f"-{flag} must be 0 (the default) or a positive number")
            fields[name] = value
    if args.dns is not None:
        fields["dns_names"] = list(args.dns)
    if args.federatesWith is not None:
        fields["federates_with"] = list(args.federatesWith)
    for name in ("admin", "downstream"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return fields


def _server_id(spiffe_id: str) -> str:
    rest = spiffe_id.removeprefix("spiffe://")
    if rest == spiffe_id or not rest.split("/")[0]:
        raise UsageError(f"-spiffeID {spiffe_id!r} is not a spiffe://trust-domain/path ID")
    return f"spiffe://{rest.split('/')[0]}/spire/server"


def _expiry(epoch: int, *, update: bool) -> str | None:
    if epoch == 0:
        return None
    if epoch < 0:
        raise UsageError("-entryExpiry is seconds since the epoch (0: never)")
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _no_field_flags(args: argparse.Namespace, action: str) -> None:
    given = [
        f"-{name}"
        for name in (
            "entryID",
            "spiffeID",
            "parentID",
            "node",
            "selector",
            "x509SVIDTTL",
            "jwtSVIDTTL",
            "dns",
            "federatesWith",
            "admin",
            "downstream",
            "hint",
            "entryExpiry",
        )  # fmt: skip
        if getattr(args, name) not in (None, False)
    ]
    if given:
        raise UsageError(
            f"-data holds the entries to {action}; drop {', '.join(given)} or drop -data"
        )


def _data(path: str) -> Iterable[tuple[int, Any]]:
    """SPIRE's registration JSON: `{"entries": [...]}`, from a file or stdin ("-")."""
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read -data {path}: {exc.strerror}") from None
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"-data {path} is not JSON: {exc}") from None
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f'-data {path} must be {{"entries": [...]}} with at least one entry')
    return enumerate(entries)


def _from_data(item: Any, index: int, *, keep_id: bool) -> dict[str, Any]:
    where = f"-data entries[{index}]"
    if not isinstance(item, dict):
        raise UsageError(f"{where} is not a JSON object")
    fields: dict[str, Any] = {}
    for key, value in item.items():
        if key in ID_FIELDS:
            if keep_id:
                fields["id"] = value
            continue
        if key in READ_ONLY_FIELDS:
            continue
        if key not in DATA_FIELDS:
            known = ", ".join(sorted(DATA_FIELDS))
            raise UsageError(f"{where}: unknown field {key!r} (known: {known}, entry_id)")
        name = DATA_FIELDS[key]
        if name == "selectors":
            fields[name] = [_selector_text(s, where) for s in (value or [])]
        elif name == "expires_at" and isinstance(value, int):
            fields[name] = _expiry(value, update=keep_id)
        else:
            fields[name] = value
    if keep_id and "id" not in fields:
        raise UsageError(f"{where} names no entry_id: which entry to update")
    return fields


def _selector_text(selector: Any, where: str) -> Any:
    """SPIRE writes selectors as {"type", "value"}; "type:value" strings pass as they are."""
    if isinstance(selector, dict) and set(selector) <= {"type", "value"}:
        return f"{selector.get('type', '')}:{selector.get('value', '')}"
    if isinstance(selector, str):
        return selector
    raise UsageError(f'{where}: a selector is {{"type": ..., "value": ...}} or "type:value"')


def _batch(
    args: argparse.Namespace,
    *,
    call: str,
    body: dict[str, list[Any]],
    items: Sequence[Any],
    key: str,
    verb: str,
    pretty: Callable[[str, list[dict[str, Any]], Sequence[Any]], None],
) -> int:
    api = Api.with_token(resolve())
    results: list[dict[str, Any]] = []
    every = body[key]
    for start in range(0, len(every), BATCH_LIMIT):
        chunk = {key: every[start : start + BATCH_LIMIT]}
        answer = api.post(f"entries/{call}", chunk)
        results.extend(answer["results"])
    failed = [r for r in results if r["status"]["code"] != "ok"]
    emit_or({"results": results}, lambda: pretty(verb, results, items), args.output)
    return FAILED_EXIT if failed else 0


def _print_results(verb: str, results: list[dict[str, Any]], items: Sequence[Any]) -> None:
    for result, item in zip(results, items, strict=True):
        status = result["status"]
        if status["code"] == "ok":
            print_entry(result["entry"])
        else:
            err(
                f"Failed to {verb} the following entry "
                f"(code: {status['code']}, detail: {json.dumps(status['detail'])}):"
            )
            print_entry(result.get("entry") or item, to_stderr=True)


# --- show / count / delete -------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    api = Api.with_token(resolve())
    if args.entryID:
        entries = [api.get(f"entries/{part(args.entryID)}")]
    else:
        entries = _matching(api, args)

    def pretty() -> None:
        found(len(entries), "entry", "entries")
        for entry in entries:
            print_entry(entry)

    emit_or({"entries": entries}, pretty, args.output)
    return 0


def _count(args: argparse.Namespace) -> int:
    entries = _matching(Api.with_token(resolve()), args)
    emit_or(
        {"count": len(entries)},
        lambda: out(plural(len(entries), "registration entry", "registration entries")),
        args.output,
    )
    return 0


def _matching(api: Api, args: argparse.Namespace) -> list[dict[str, Any]]:
    query = {"spiffe_id": args.spiffeID or "", "parent_id": args.parentID or ""}
    entries = list(api.list_all("entries", query))
    if args.selector:
        wanted = set(args.selector)
        entries = [e for e in entries if _match(set(e["selectors"]), wanted, args.matchSelectorsOn)]
    if args.federatesWith:
        wanted = {td.removeprefix("spiffe://") for td in args.federatesWith}
        entries = [
            e
            for e in entries
            if _match(
                {td.removeprefix("spiffe://") for td in e["federates_with"]},
                wanted,
                args.matchFederatesWithOn,
            )
        ]
    if args.hint is not None:
        entries = [e for e in entries if e.get("hint", "") == args.hint]
    if args.downstream is not None:
        entries = [e for e in entries if bool(e.get("downstream")) == args.downstream]
    return entries


def _match(have: set[str], wanted: set[str], mode: str) -> bool:
    """SPIRE's match modes: the entry's set against the flags' set."""
    if mode == "exact":
        return have == wanted
    if mode == "any":
        return bool(have & wanted)
    if mode == "subset":
        return have <= wanted
    return have >= wanted  # superset: the entry has every selector given


def _delete(args: argparse.Namespace) -> int:
    if bool(args.entryID) == bool(args.file):
        raise UsageError("give -entryID ID or -file FILE (one of them)")
    ids: list[Any] = [args.entryID] if args.entryID else _ids(args.file)
    api = Api.with_token(resolve())
    results: list[dict[str, Any]] = []
    for start in range(0, len(ids), BATCH_LIMIT):
        answer = api.post("entries/batch-delete", {"ids": ids[start : start + BATCH_LIMIT]})
        results.extend(answer["results"])

    def pretty() -> None:
        for entry_id, result in zip(ids, results, strict=True):
            status = result["status"]
            if status["code"] == "ok":
                out(f"Deleted entry with ID: {entry_id}")
            else:
                err(
                    f"Failed to delete entry with ID {entry_id} "
                    f"(code: {status['code']}, detail: {json.dumps(status['detail'])})"
                )

    emit_or({"results": results}, pretty, args.output)
    return FAILED_EXIT if any(r["status"]["code"] != "ok" for r in results) else 0


def _ids(path: str) -> list[Any]:
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text()
        document = json.loads(raw)
    except OSError as exc:
        raise UsageError(f"cannot read -file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"-file {path} is not JSON: {exc}") from None
    ids = document.get("ids") if isinstance(document, dict) else None
    if not isinstance(ids, list) or not ids:
        raise UsageError(f'-file {path} must be {{"ids": ["<entry id>", ...]}}')
    return ids


def print_entry(entry: dict[str, Any], *, to_stderr: bool = False) -> None:
    rows: list[tuple[str, Any]] = [
        ("Entry ID", entry.get("id") or "(none)"),
        ("SPIFFE ID", entry.get("spiffe_id", "")),
        ("Parent ID", entry.get("parent_id", "")),
    ]
    if "revision" in entry:
        rows.append(("Revision", entry["revision"]))
    if entry.get("downstream"):
        rows.append(("Downstream", "true"))
    rows.append(("X509-SVID TTL", entry.get("x509_svid_ttl") or "default"))
    rows.append(("JWT-SVID TTL", entry.get("jwt_svid_ttl") or "default"))
    if entry.get("expires_at"):
        rows.append(("Expiration time", entry["expires_at"]))
    rows += [("Selector", s) for s in entry.get("selectors") or []]
    rows += [("FederatesWith", td) for td in entry.get("federates_with") or []]
    rows += [("DNS name", name) for name in entry.get("dns_names") or []]
    if entry.get("admin"):
        rows.append(("Admin", "true"))
    if entry.get("hint"):
        rows.append(("Hint", entry["hint"]))
    block(rows, to_stderr=to_stderr)


__all__ = ["print_entry", "register"]
