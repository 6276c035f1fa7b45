"""Where the commands send requests, and with which token: env vars, else `hallmark login`'s file.

`HALLMARK_API_URL` and `HALLMARK_API_TOKEN` win over the credentials file, which `hallmark login`
writes 0600 in a 0700 directory (`$XDG_CONFIG_HOME/hallmark/credentials`, else
`~/.config/hallmark/credentials`). A stored token is only ever sent to the URL it was issued
by, and a file that others can read (or that another user owns) is refused, as ssh refuses a
private key with loose permissions.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.spirecli.flags import UsageError

DEFAULT_API_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "HALLMARK_API_URL"
TOKEN_VARIABLE = "HALLMARK_API_TOKEN"  # noqa: S105 (a variable name, not a secret)


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hallmark"


def credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    return config_dir(environ) / "credentials"


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(
            f"{url!r} is not an http:// or https:// URL; set {URL_VARIABLE} (or --api-url) to "
            f"the API's address, e.g. {DEFAULT_API_URL}"
        )
    return url


def load_stored(path: Path | None = None) -> dict[str, Any] | None:
    """The stored login, or None if there is none; a file others could read is refused."""
    path = path or credentials_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.geteuid():
            raise UsageError(
                f"refusing to use {path}: it belongs to another user (uid {info.st_uid}); "
                "remove it and run `hallmark login` again"
            )
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise UsageError(
                f"refusing to use {path}: its mode {stat.S_IMODE(info.st_mode):04o} lets other "
                f"users read the token; run `chmod 600 {path}` (and consider `hallmark logout` "
                "and a fresh `hallmark login`, as the token may have been read)"
            )
        raw = handle.read()
    try:
        stored = json.loads(raw)
    except ValueError:
        raise UsageError(f"{path} is not a credentials file; run `hallmark login` again") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("token"), str):
        raise UsageError(f"{path} holds no token; run `hallmark login` again")
    return stored


def store(document: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write the login atomically: 0700 directory, 0600 file, never briefly readable by others."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, temporary = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(dict(document), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def forget(path: Path | None = None) -> bool:
    path = path or credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class Target:
    """The API to call and the token to call it with (`token_source` says where it came from)."""

    api_url: str
    token: str | None
    token_source: str  # "HALLMARK_API_TOKEN", the credentials path, or ""
    note: str = ""  # why a stored token was not used, for the "no token" message


def resolve(environ: Mapping[str, str] | None = None) -> Target:
    environ = os.environ if environ is None else environ
    path = credentials_path(environ)
    env_token = (environ.get(TOKEN_VARIABLE) or "").strip()
    env_url = (environ.get(URL_VARIABLE) or "").strip()
    stored = None if env_token else load_stored(path)
    stored_url = normalise_url(stored["api_url"]) if stored and stored.get("api_url") else None
    api_url = normalise_url(env_url or stored_url or DEFAULT_API_URL)
    if env_token:
        return Target(api_url, env_token, TOKEN_VARIABLE)
    if stored is None:
        return Target(api_url, None, "")
    if stored_url is not None and stored_url != api_url:
        # Never hand a token to a server other than the one that issued it.
        note = (
            f"the login stored in {path} is for {stored_url}, not {api_url} ({URL_VARIABLE} is set)"
        )
        return Target(api_url, None, "", note)
    return Target(api_url, stored["token"], str(path))


def no_token_message(target: Target) -> str:
    lines = [f"no API token for {target.api_url}."]
    if target.note:
        lines.append(target.note + ".")
    lines.append(
        f"Either export {TOKEN_VARIABLE}=<token> (the token printed at signup, or one made "
        "under /api/v1/api-tokens), or run `hallmark login --email you@example.com` "
        f"(with --api-url or {URL_VARIABLE} for a server other than {DEFAULT_API_URL})."
    )
    return "\n".join(lines)
