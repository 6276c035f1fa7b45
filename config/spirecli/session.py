"""`hallmark login` and `hallmark logout`: a session token from email and password, kept 0600."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from config.spirecli.api import Api, ApiError
from config.spirecli.credentials import (
    DEFAULT_API_URL,
    URL_VARIABLE,
    Target,
    credentials_path,
    forget,
    load_stored,
    normalise_url,
    store,
)
from config.spirecli.flags import UsageError
from config.spirecli.output import emit_or, out


def register_login(groups: argparse._SubParsersAction, summary: str) -> None:  # type: ignore[type-arg]
    login = groups.add_parser(
        "login",
        help=summary,
        description="Log in with email and password (POST /api/v1/auth/login) and store the "
        "session token in $XDG_CONFIG_HOME/hallmark/credentials (default "
        "~/.config/hallmark/credentials), mode 0600. The other commands use it unless "
        "HALLMARK_API_TOKEN is set.",
    )
    login.flag(
        "api-url",
        dest="api_url",
        metavar="URL",
        help=f"the API (default: ${URL_VARIABLE}, else {DEFAULT_API_URL})",
    )
    login.flag("email", metavar="EMAIL", help="your account's email (prompted if absent)")
    login.flag(
        "tenant",
        metavar="TENANT",
        help="the tenant's slug or trust domain, when your account belongs to several",
    )
    login.flag(
        "password-file",
        dest="password_file",
        metavar="FILE",
        help="read the password from FILE's first line (else a prompt, or stdin's first line)",
    )
    login.output_flag()
    login.set_defaults(run=_login)


def register_logout(groups: argparse._SubParsersAction, summary: str) -> None:  # type: ignore[type-arg]
    logout = groups.add_parser(
        "logout",
        help=summary,
        description="Revoke the stored session token (POST /api/v1/auth/logout) and delete the "
        "credentials file.",
    )
    logout.output_flag()
    logout.set_defaults(run=_logout)


def _login(args: argparse.Namespace) -> int:
    api_url = normalise_url(args.api_url or os.environ.get(URL_VARIABLE) or DEFAULT_API_URL)
    email = args.email or _prompt("Email: ")
    password = _password(args.password_file)
    body: dict[str, Any] = {"email": email, "password": password}
    if args.tenant:
        body["tenant"] = args.tenant
    api = Api(Target(api_url, None, ""))
    answer = api.post("auth/login", body, auth=False)
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        raise ApiError(0, "unexpected_answer", "the login answer carried no token")
    stored = {
        "api_url": api_url,
        "token": answer["token"],
        "expires_at": answer.get("expires_at"),
        "tenant": answer.get("tenant"),
        "role": answer.get("role"),
        "email": email,
    }
    path = store(stored)
    summary = {k: v for k, v in stored.items() if k != "token"} | {"credentials": str(path)}
    emit_or(
        summary,
        lambda: out(
            f"Logged in to {api_url} as {email} (tenant {_tenant_name(answer.get('tenant'))}, "
            f"role {answer.get('role')}, until {answer.get('expires_at')}); "
            f"token stored in {path}"
        ),
        args.output,
    )
    return 0


def _logout(args: argparse.Namespace) -> int:
    path = credentials_path()
    stored = load_stored(path)
    if stored is None:
        emit_or({"logged_out": False}, lambda: out(f"Not logged in (no {path})"), args.output)
        return 0
    api_url = normalise_url(stored.get("api_url") or DEFAULT_API_URL)
    api = Api(Target(api_url, stored["token"], str(path)))
    try:
        api.post("auth/logout")
    except ApiError as failure:
        if failure.code not in ("invalid_token", "authentication_failed"):
            failure.hint = f"the token was not revoked, so {path} is kept; retry `hallmark logout`"
            raise
        # Already revoked or expired: nothing left to revoke.
    forget(path)
    emit_or({"logged_out": True}, lambda: out(f"Logged out of {api_url}"), args.output)
    return 0


def _tenant_name(tenant: Any) -> str:
    if isinstance(tenant, dict):
        return str(tenant.get("slug") or tenant.get("name") or tenant.get("id"))
    return str(tenant)


def _prompt(text: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError("--email is required when stdin is not a terminal")
    answer = input(text).strip()
    if not answer:
        raise UsageError("an email is required")
    return answer


def _password(path: str | None) -> str:
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read --password-file {path}: {exc.strerror}") from None
        password = lines[0] if lines else ""
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UsageError("an empty password; give --password-file FILE or type it at the prompt")
    return password


__all__ = ["register_login", "register_logout"]
