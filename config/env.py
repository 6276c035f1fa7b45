"""A small typed reader for the environment variables that configure Hallmark."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def text(name: str, default: str | None = None, *, hint: str = "") -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ImproperlyConfigured(
            f"{name} is required; set it in the environment" + (f" ({hint})" if hint else "")
        )
    return value


def optional(name: str) -> str | None:
    return os.environ.get(name) or None


def boolean(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def integer(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def data_dir() -> Path:
    return Path(os.environ.get("HALLMARK_DATA_DIR") or ".hallmark").resolve()


def rate(name: str, default: str) -> str:
    """A rate limit written COUNT/SECONDS (e.g. `5/3600`: five an hour)."""
    value = os.environ.get(name) or default
    count, sep, seconds = value.partition("/")
    if not (sep and count.isdigit() and seconds.isdigit() and int(count) and int(seconds)):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate COUNT/SECONDS (e.g. 5/3600)")
    return value


def names(name: str) -> list[str]:
    """A comma-separated list of names (empty when unset)."""
    return [n.strip() for n in (os.environ.get(name) or "").split(",") if n.strip()]
