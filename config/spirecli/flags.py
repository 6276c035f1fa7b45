"""Go-style flags for the SPIRE-like commands: `-spiffeID X`, `--spiffeID=X`, `-admin=false`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

USAGE_EXIT = 2  # a command called wrongly, or not configured: nothing was sent
FAILED_EXIT = 1  # the API (or the network to it) said no


class UsageError(Exception):
    """The command line cannot be run as given; the message says what to do instead."""


class FlagError(UsageError):
    """A flag that is unknown, missing its value, or has a value it cannot take."""


class FlagParser(argparse.ArgumentParser):
    """An argparse parser whose flags read as SPIRE's Go flags and whose errors are raised.

    Every flag is registered with one dash and with two (`-parentID`, `--parentID`), the
    `=value` spelling works for both, abbreviations are off (Go has none), `-h`, `-help` and
    `--help` print help. Errors raise `UsageError` so that `main()` decides the exit code
    (2) instead of argparse calling `sys.exit` from deep inside a test.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs["add_help"] = False
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-h", "-help", "--help", action="help", help="show this help message and exit"
        )

    def flag(self, name: str, **kwargs: Any) -> argparse.Action:
        """Add `-name` and `--name` (stored under `name`)."""
        kwargs.setdefault("dest", name)
        return self.add_argument(f"-{name}", f"--{name}", **kwargs)

    def bool_flag(self, name: str, help: str) -> argparse.Action:  # noqa: A002
        """A Go boolean flag: `-name` is true, `-name=false` false, absent is None."""
        return self.flag(name, action=BoolFlag, help=help)

    def output_flag(self) -> None:
        self.flag(
            "output",
            choices=("pretty", "json"),
            default="pretty",
            help="output format: pretty (default, for people) or json (for scripts)",
        )

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise FlagError(message)


class BoolFlag(argparse.Action):
    """`-admin`, `-admin=true`, `-admin=false` (Go's spelling of booleans)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", None)
        super().__init__(
            option_strings, dest, nargs="?", const=True, metavar="true|false", **kwargs
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if isinstance(values, str):
            text = values.strip().lower()
            if text in ("true", "1", "t", "yes"):
                values = True
            elif text in ("false", "0", "f", "no"):
                values = False
            else:
                raise argparse.ArgumentError(self, f"{values!r} is not true or false")
        setattr(namespace, self.dest, values)
