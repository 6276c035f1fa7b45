"""Roles and the one decision table: which role may read or write which resource.

Every authenticated view names its resource (`permission_resource`); safe methods read it,
the others write it. A role is the set of (resource, access) pairs it holds, so "a token
never above its creator's" is a subset test, and a token acting for a member holds only what
both the token's role and the member's current role hold.
"""

from __future__ import annotations

from collections.abc import Iterable

from hallmark.errors import HallmarkError
from hallmark.spiffeid import SpiffeId

READ = "read"
WRITE = "write"

RESOURCES = (
    "trust_domain",
    "bundle",
    "entries",
    "join_tokens",
    "agents",
    "federation",
    "node_attestors",
    "audit",
    "usage",
    "members",
    "api_tokens",
    "billing",
    "tenant",
    # The caller's own session (logout): any principal may end its own.
    "session",
)

OWNER = "owner"
ADMIN = "admin"
REGISTRAR = "registrar"
VIEWER = "viewer"
AUDITOR = "auditor"
ROLES = (OWNER, ADMIN, REGISTRAR, VIEWER, AUDITOR)

Grant = tuple[str, str]


def _grants(reads: Iterable[str], writes: Iterable[str]) -> frozenset[Grant]:
    return frozenset({(r, READ) for r in reads} | {(r, WRITE) for r in writes})


def _all_but(*excluded: str) -> tuple[str, ...]:
    return tuple(r for r in RESOURCES if r not in excluded)


# DESIGN.md "People": owner everything; admin everything but members, billing and deleting the
# tenant (it sees who the members are and what the bill is, and changes neither); registrar
# writes entries and join tokens and reads the rest but audit and tokens; viewer reads
# everything but audit and tokens; auditor reads audit and usage only.
DECISIONS: dict[str, frozenset[Grant]] = {
    OWNER: _grants(RESOURCES, RESOURCES),
    ADMIN: _grants(RESOURCES, _all_but("members", "billing")),
    REGISTRAR: _grants(_all_but("audit", "api_tokens"), ("entries", "join_tokens", "session")),
    VIEWER: _grants(_all_but("audit", "api_tokens"), ("session",)),
    AUDITOR: _grants(("audit", "usage", "session"), ("session",)),
}


def grants(role: str) -> frozenset[Grant]:
    """What a role holds; an unknown role holds nothing."""
    return DECISIONS.get(role, frozenset())


def allows(held: frozenset[Grant], resource: str, access: str) -> bool:
    return (resource, access) in held


def not_above(role: str, held: frozenset[Grant]) -> bool:
    """Whether `role` holds nothing beyond `held` (a creator's grants)."""
    return role in DECISIONS and grants(role) <= held


def access_of(method: str) -> str:
    return READ if method.upper() in ("GET", "HEAD", "OPTIONS") else WRITE


def under_prefix(spiffe_id: str, prefix: str) -> bool:
    """Whether `spiffe_id` is under `prefix` (stored ending in "/"); no prefix: everything.

    `spiffe://td/payments/` holds `spiffe://td/payments` and `spiffe://td/payments/api`, not
    `spiffe://td/payments-evil`.
    """
    if not prefix:
        return True
    return spiffe_id.startswith(prefix) or spiffe_id + "/" == prefix


class OutsidePrefix(HallmarkError):
    """403 `permission_denied`: an entry outside the token's `spiffe_id_prefix`."""

    code = "permission_denied"
    http_status = 403


def check_under_prefix(prefix: str, *spiffe_ids: object) -> None:
    """Raise OutsidePrefix for the first well-formed SPIFFE ID outside `prefix`.

    A malformed ID is left to the entry checks, which refuse it with their own 400.
    """
    for value in spiffe_ids:
        if not prefix or not isinstance(value, str):
            continue
        try:
            canonical = str(SpiffeId.parse(value))
        except HallmarkError:
            continue
        if not under_prefix(canonical, prefix):
            raise OutsidePrefix(
                f"{canonical!r} is outside this token's spiffe_id_prefix {prefix!r}"
            )
