"""Field rules for registration entries and join tokens, checked before anything is stored."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.conf import settings
from django.utils import timezone

from hallmark.errors import InvalidSelector, InvalidSpiffeId, InvalidTrustDomain
from hallmark.selectors import Selector
from hallmark.spiffeid import SpiffeId, TrustDomain
from issuance.errors import InvalidEntry
from issuance.services import dns_policy

MAX_JWT_SVID_TTL_SECONDS = 24 * 3600
# SPIRE-BEHAVIOUR.md: the largest safe SVID TTL is min(CA TTL / 6, 7 days).
MAX_SAFE_SVID_TTL_SECONDS = 7 * 24 * 3600
MAX_SELECTORS = 64
MAX_DNS_NAMES = 32
MAX_FEDERATES_WITH = 64
MAX_HINT_LENGTH = 1024
MAX_DNS_NAME_LENGTH = 253
# Paths under /spire/ name the server and agents; workloads must not be given them.
RESERVED_PATH_PREFIX = "/spire/"
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def max_x509_svid_ttl() -> int:
    return max(1, min(settings.CA_TTL_SECONDS // 6, MAX_SAFE_SVID_TTL_SECONDS))


def default_x509_svid_ttl() -> int:
    return min(settings.X509_SVID_TTL_SECONDS, max_x509_svid_ttl())


def default_jwt_svid_ttl() -> int:
    return min(settings.JWT_SVID_TTL_SECONDS, MAX_JWT_SVID_TTL_SECONDS)


def spiffe_id_in(
    value: Any, trust_domain: TrustDomain, *, field: str, code: str = "invalid_spiffe_id"
) -> SpiffeId:
    """A SPIFFE ID with a non-root path in the tenant's own trust domain."""
    if not isinstance(value, str):
        raise InvalidSpiffeId(f"{field} must be a string 'spiffe://{trust_domain.name}/...'")
    try:
        spiffe_id = SpiffeId.parse(value)
    except InvalidSpiffeId as exc:
        raise InvalidSpiffeId(f"{field}: {exc.detail}", code=code) from None
    if spiffe_id.trust_domain != trust_domain:
        raise InvalidSpiffeId(
            f"{field} {value!r} is not in this tenant's trust domain {trust_domain.name!r}",
            code="spiffe_id_outside_trust_domain",
        )
    if not spiffe_id.path:
        raise InvalidSpiffeId(f"{field} {value!r} needs a path", code=code)
    return spiffe_id


def workload_spiffe_id(value: Any, trust_domain: TrustDomain, *, field: str) -> SpiffeId:
    spiffe_id = spiffe_id_in(value, trust_domain, field=field)
    if (spiffe_id.path + "/").startswith(RESERVED_PATH_PREFIX):
        raise InvalidSpiffeId(
            f"{field} {value!r} is under {RESERVED_PATH_PREFIX}, "
            "reserved for the server and agents",
            code="reserved_spiffe_id",
        )
    return spiffe_id


def selectors(value: Any) -> list[str]:
    """Sorted, de-duplicated `type:value` strings; at least one."""
    if not isinstance(value, list | tuple) or not value:
        raise InvalidSelector("selectors must be a non-empty list of 'type:value' strings")
    if len(value) > MAX_SELECTORS:
        raise InvalidSelector(f"at most {MAX_SELECTORS} selectors per entry")
    return sorted({str(Selector.parse(text)) for text in value})


def ttl(value: Any, *, field: str, default: int, maximum: int) -> int:
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEntry(f"{field} must be a whole number of seconds", code="invalid_ttl")
    if not 1 <= value <= maximum:
        raise InvalidEntry(
            f"{field} must be between 1 and {maximum} seconds (0 or absent for the default)",
            code="invalid_ttl",
        )
    return value


def dns_name(value: Any, trust_domain: TrustDomain) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEntry("a DNS name must be a non-empty string", code="invalid_dns_name")
    name = value.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > MAX_DNS_NAME_LENGTH or not all(
        _DNS_LABEL.match(label) or (index == 0 and label == "*" and len(labels) > 1)
        for index, label in enumerate(labels)
    ):
        raise InvalidEntry(f"{value!r} is not a valid DNS name", code="invalid_dns_name")
    if name == trust_domain.name:
        # The agent API's server certificate carries the trust domain name as its DNS SAN.
        raise InvalidEntry(
            f"DNS name {value!r} is reserved for the trust domain's own server",
            code="reserved_dns_name",
        )
    return name


def dns_names(value: Any, trust_domain: TrustDomain) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or len(value) > MAX_DNS_NAMES:
        raise InvalidEntry(
            f"dns_names must be a list of at most {MAX_DNS_NAMES} names", code="invalid_dns_name"
        )
    names = list(dict.fromkeys(dns_name(v, trust_domain) for v in value))
    dns_policy.check_dns_names(names, trust_domain)
    return names


def federates_with(value: Any, trust_domain: TrustDomain) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or len(value) > MAX_FEDERATES_WITH:
        raise InvalidTrustDomain(
            f"federates_with must be a list of at most {MAX_FEDERATES_WITH} trust domains"
        )
    names: list[str] = []
    for text in value:
        if not isinstance(text, str):
            raise InvalidTrustDomain("federates_with holds trust domain names")
        other = TrustDomain.parse(text)
        if other == trust_domain:
            raise InvalidTrustDomain(
                f"an entry cannot federate with its own trust domain {trust_domain.name!r}"
            )
        names.append(other.name)
    return sorted(set(names))


def hint(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_HINT_LENGTH:
        raise InvalidEntry(
            f"hint must be a string of at most {MAX_HINT_LENGTH} characters", code="invalid_hint"
        )
    return value


def flag(value: Any, *, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidEntry(f"{field} must be true or false", code="invalid_entry")
    return value


def future_time(value: Any, *, field: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or timezone.is_naive(value):
        raise InvalidEntry(f"{field} must be a date-time with a time zone", code="invalid_expiry")
    if value <= timezone.now():
        raise InvalidEntry(f"{field} must be in the future", code="invalid_expiry")
    return value
