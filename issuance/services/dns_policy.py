"""Which DNS names an entry may put into its SVIDs: none that speak for another tenant or us.

Under a shared upstream root (or any relying party that trusts several trust domains), an
SVID whose DNS SAN is another tenant's trust domain, or covers it with a wildcard, can stand
in for that tenant's server; one naming the platform's own hostnames (the REST and agent
endpoints, `localhost`, an IP literal) can stand in for the platform. Both are refused at
input with 400 `dns_name_not_allowed`. The answer says a name is taken on the platform, never
by whom.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from hallmark.spiffeid import TrustDomain
from issuance.errors import InvalidEntry
from trustdomains import services as trustdomain_services

LOOPBACK_NAME = "localhost"


def _host_of(address: str) -> str:
    """The host part of a URL or a HOST:PORT endpoint ("" when there is none)."""
    text = address.strip()
    if not text:
        return ""
    if "://" not in text:
        text = f"//{text}"
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")


def reserved_names() -> frozenset[str]:
    """The platform's own hostnames: its public endpoints, `localhost`, the operator's list."""
    names = {LOOPBACK_NAME}
    names.update(
        _host_of(address) for address in (settings.HTTP_PUBLIC_URL, settings.AGENT_ENDPOINT)
    )
    names.update(n.strip().lower().rstrip(".") for n in settings.RESERVED_DNS_NAMES if n.strip())
    names.discard("")
    return frozenset(names)


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        # No top-level domain is all digits: "10.1" or "1.2.3" is an address to many resolvers.
        return name.rsplit(".", 1)[-1].isdigit()
    return True


def _covers(name: str, other: str) -> bool:
    """Whether the SAN `name` (maybe `*.suffix`) matches the host name `other`."""
    if name.startswith("*."):
        head, _, tail = other.partition(".")
        return bool(head) and tail == name[2:]
    return name == other


def _reserved(name: str) -> bool:
    if _is_ip_literal(name) or name == LOOPBACK_NAME or name.endswith("." + LOOPBACK_NAME):
        return True
    return any(_covers(name, reserved) for reserved in reserved_names())


def _platform_trust_domains(
    names: Iterable[str], own: TrustDomain, *, limit: int | None = 1
) -> list[str]:
    """The platform's trust domains (other than `own`) that one of `names` matches."""
    from tenants.models import Tenant

    exact = [n for n in names if not n.startswith("*.")]
    suffixes = [n[2:] for n in names if n.startswith("*.")]
    query = Tenant.objects.filter(trust_domain__in=exact)
    for suffix in suffixes:
        query = query | Tenant.objects.filter(trust_domain__regex=rf"^[^.]+\.{re.escape(suffix)}$")
    found = query.exclude(trust_domain=own.name).values_list("trust_domain", flat=True)
    return list(found[:limit] if limit is not None else found)


def names_not_allowed_now(names: Iterable[str], trust_domain: TrustDomain) -> set[str]:
    """Those of `names` that stand for the platform or another tenant today (one query).

    Entries are checked when written; a tenant that signs up later with a name an older
    entry carries, or a name the operator reserves later, is caught here at minting time.
    """
    wanted = set(names)
    refused = {n for n in wanted if _reserved(n)}
    rest = wanted - refused
    if rest:
        taken = _platform_trust_domains(sorted(rest), trust_domain, limit=None)
        refused |= {n for n in rest if any(_covers(n, other) for other in taken)}
    return refused


@dataclass(frozen=True)
class _Prefetched:
    """What `check_dns_names` reads from the database, read once for a whole batch call."""

    trust_domain: TrustDomain
    names: frozenset[str]
    taken: tuple[str, ...]  # other tenants' trust domains that one of `names` matches
    confined: bool


_prefetched: ContextVar[_Prefetched | None] = ContextVar("dns_policy_prefetched", default=None)


@contextlib.contextmanager
def prefetched(names: Iterable[str], trust_domain: TrustDomain) -> Iterator[None]:
    """Within the block, `check_dns_names` of any of `names` asks the database nothing more.

    A batch of 500 entries with DNS names would otherwise cost two queries an entry; the
    answers (codes and details) are the same as without it.
    """
    wanted = frozenset(n.lower().rstrip(".") for n in names if isinstance(n, str) and n)
    snapshot = _Prefetched(
        trust_domain=trust_domain,
        names=wanted,
        taken=tuple(_platform_trust_domains(sorted(wanted), trust_domain, limit=None))
        if wanted
        else (),
        confined=bool(wanted) and trustdomain_services.dns_names_confined_to_trust_domain(),
    )
    token = _prefetched.set(snapshot)
    try:
        yield
    finally:
        _prefetched.reset(token)


def _other_tenants_match(names: list[str], trust_domain: TrustDomain) -> bool:
    known = _prefetched.get()
    if known is not None and known.trust_domain == trust_domain and known.names >= set(names):
        return any(_covers(n, other) for n in names for other in known.taken)
    return bool(_platform_trust_domains(names, trust_domain))


def _confined(names: list[str], trust_domain: TrustDomain) -> bool:
    known = _prefetched.get()
    if known is not None and known.trust_domain == trust_domain and known.names >= set(names):
        return known.confined
    return trustdomain_services.dns_names_confined_to_trust_domain()


def check_dns_names(names: list[str], trust_domain: TrustDomain) -> None:
    """Refuse (400 `dns_name_not_allowed`) names that stand for the platform or another tenant.

    `names` are already normalised (lower case, no trailing dot, valid syntax).
    """
    for name in names:
        if _reserved(name):
            raise InvalidEntry(
                f"DNS name {name!r} names the platform itself (its endpoints, localhost or an "
                "IP address) and cannot be put into an SVID",
                code="dns_name_not_allowed",
            )
        if name.startswith("*.") and _covers(name, trust_domain.name):
            raise InvalidEntry(
                f"DNS name {name!r} covers the trust domain's own server name",
                code="reserved_dns_name",
            )
    if names and _confined(names, trust_domain):
        outside = [n for n in names if not n.endswith("." + trust_domain.name)]
        if outside:
            raise InvalidEntry(
                f"DNS name {outside[0]!r} is outside trust domain {trust_domain.name}: its "
                "upstream authority signs CAs with a name constraint to the trust domain",
                code="dns_name_outside_trust_domain",
            )
    if names and _other_tenants_match(names, trust_domain):
        raise InvalidEntry(
            "dns_names name or cover a trust domain of another tenant on this platform; "
            "an SVID may carry only names that are not trust domains here",
            code="dns_name_not_allowed",
        )
