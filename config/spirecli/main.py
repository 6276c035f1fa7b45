"""`hallmark entry|token|agent|bundle|federation|localauthority|login|logout`: parse, call, exit.

Exit codes a script can rely on: 0 done; 1 the API refused (its `code` and `detail` on stderr)
or could not be reached; 2 the command line was wrong or no credentials are configured (nothing
was sent).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence

from config.spirecli import agent, bundle, entry, federation, localauthority, session, token
from config.spirecli.api import ApiError
from config.spirecli.flags import FAILED_EXIT, USAGE_EXIT, FlagError, FlagParser, UsageError
from config.spirecli.output import err

# group name → (one-line help, module with register())
Register = Callable[["argparse._SubParsersAction[FlagParser]", str], None]
GROUPS: dict[str, tuple[str, Register]] = {
    "entry": ("registration entries (as spire-server entry)", entry.register),
    "token": ("join tokens (as spire-server token)", token.register),
    "agent": ("attested agents (as spire-server agent)", agent.register),
    "bundle": ("the trust bundle and federated bundles (as spire-server bundle)", bundle.register),
    "federation": ("federation relationships (as spire-server federation)", federation.register),
    "localauthority": (
        "forced CA and JWT key rotation (as spire-server localauthority)",
        localauthority.register,
    ),
    "login": ("log in with email and password; store a session token 0600", session.register_login),
    "logout": ("revoke the stored session token and forget it", session.register_logout),
}


def parser() -> FlagParser:
    top = FlagParser(
        prog="hallmark",
        description="SPIRE-style commands over Hallmark's REST API (HALLMARK_API_URL, "
        "HALLMARK_API_TOKEN or `hallmark login`).",
    )
    groups = top.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for summary, register in GROUPS.values():
        register(groups, summary)
    return top


def main(argv: Sequence[str]) -> int:
    """Run one command; returns the exit code (argparse's own exits included)."""
    wants_json = _wants_json(argv)
    try:
        args = parser().parse_args(list(argv))
        status: int = args.run(args)
        return status
    except UsageError as problem:
        text = f"hallmark {_command(argv)}: {problem}"
        if isinstance(problem, FlagError):
            text += f"\n(`hallmark {_command(argv)} -help` lists every flag)"
        _report(
            text,
            {"code": "usage", "detail": str(problem)},
            wants_json,
        )
        return USAGE_EXIT
    except ApiError as failure:
        text = f"hallmark {_command(argv)}: {failure.code}: {failure.detail}"
        if failure.status:
            text += f" (HTTP {failure.status})"
        if failure.retry_after:
            text += f"\nretry after {failure.retry_after} seconds"
        if failure.hint:
            text += f"\n{failure.hint}"
        _report(text, failure.as_json(), wants_json)
        return FAILED_EXIT
    except SystemExit as leaving:  # -help
        return leaving.code if isinstance(leaving.code, int) else USAGE_EXIT
    except KeyboardInterrupt:
        err("interrupted")
        return 130


def _report(text: str, document: dict[str, object], wants_json: bool) -> None:
    if wants_json:
        import json

        print(json.dumps({"error": document}, sort_keys=True), file=sys.stderr)
    else:
        err(text)


def _wants_json(argv: Sequence[str]) -> bool:
    for index, arg in enumerate(argv):
        name, _, value = arg.lstrip("-").partition("=")
        if name == "output" and arg.startswith("-"):
            chosen = value or (argv[index + 1] if index + 1 < len(argv) else "")
            return chosen == "json"
    return False


def _command(argv: Sequence[str]) -> str:
    words = list(itertools.takewhile(lambda arg: not arg.startswith("-"), argv))
    return " ".join(words[:3] if words[:1] == ["localauthority"] else words[:2])


def run_from_shell() -> None:
    sys.exit(main(sys.argv[1:]))
