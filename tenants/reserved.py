"""Trust domain names no tenant may take: the platform's own, loopback, IP literals, the operator's.

A tenant whose trust domain is `localhost`, `127.0.0.1` or the platform's own hostname could
get SVIDs (and, with `dns_names`, certificates) that name places every agent and operator
trusts. Reserved are:

- the hosts of `HALLMARK_HTTP_PUBLIC_URL` and `HALLMARK_AGENT_ENDPOINT`, and names under them;
- `localhost`, `*.localhost` (RFC 6761) and the platform's internal `hallmark.local` names;
- IP literals: anything `ipaddress` or the C resolver (`inet_aton`: `127.1`, `0x7f.1`) reads
  as an address, and names whose last label is numeric (no DNS name is);
- `HALLMARK_RESERVED_TRUST_DOMAINS`: comma-separated names; `*.example.com` reserves every
  name under example.com and example.com itself.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from tenants.api.errors import ApiError

BUILT_IN = ("*.localhost", "*.hallmark.local")


def _host_of(address: str) -> str:
    """The host of a URL or HOST:PORT, lowercased and without brackets or a trailing dot."""
    text = address.strip()
    if "//" not in text:
        text = f"//{text}"
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def reserved_patterns() -> list[str]:
    """Every reserved name; `*.x` means x and every name under it."""
    patterns = list(BUILT_IN)
    for address in (settings.HTTP_PUBLIC_URL, settings.AGENT_ENDPOINT):
        host = _host_of(address)
        if host:
            patterns.append(f"*.{host}")
    patterns.extend(p.strip().rstrip(".").lower() for p in settings.RESERVED_TRUST_DOMAINS)
    return [p for p in patterns if p and p != "*."]


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(name)
        return True
    except (OSError, ValueError):
        pass
    return name.rsplit(".", 1)[-1].isdigit()


def is_reserved(name: str) -> bool:
    """Whether a (valid) trust domain name is reserved for the platform."""
    name = name.rstrip(".").lower()
    if is_ip_literal(name):
        return True
    for pattern in reserved_patterns():
        if pattern.startswith("*."):
            base = pattern[2:]
            if name == base or name.endswith(f".{base}"):
                return True
        elif name == pattern:
            return True
    return False


def check_not_reserved(name: str) -> None:
    """400 `trust_domain_reserved` for a reserved name."""
    if is_reserved(name):
        raise ApiError(
            "trust_domain_reserved", f"trust domain {name!r} is reserved; choose another name"
        )
