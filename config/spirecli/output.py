"""Printing: SPIRE-like `Label : value` blocks for people, JSON documents for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any


def out(text: str = "") -> None:
    print(text, file=sys.stdout)


def err(text: str) -> None:
    print(text, file=sys.stderr)


def emit_json(document: Any) -> None:
    out(json.dumps(document, indent=2, sort_keys=True))


def block(rows: Iterable[tuple[str, Any]], *, width: int = 17, to_stderr: bool = False) -> None:
    """`Label<pad>: value` lines and a blank line, as spire-server prints a record."""
    printer = err if to_stderr else out
    for label, value in rows:
        printer(f"{label.ljust(width)}: {value}")
    printer("")


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def found(count: int, one: str, many: str) -> None:
    out(f"Found {plural(count, one, many)}")
    if count:
        out("")


def emit_or(document: Any, pretty: Callable[[], None], output: str) -> None:
    """Print the JSON document with `-output json`, else run the pretty printer."""
    if output == "json":
        emit_json(document)
    else:
        pretty()
