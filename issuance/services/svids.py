"""Workload X.509-SVIDs minted for an agent: only for entries it is authorised for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from django.db import transaction

from hallmark.errors import InvalidSvid
from hallmark.spiffeid import SpiffeId
from hallmark.x509svid import LeafRequest, public_key_from_csr
from issuance.errors import InvalidEntry
from issuance.models import Agent, Entry
from issuance.services import dns_policy
from issuance.services.entries import (
    authorized_entries_by_id,
    normalized_entry_id,
    tenant_trust_domain,
)
from tenants.metering import services as metering
from tenants.services import record_audit
from trustdomains import services as trustdomain_services

if TYPE_CHECKING:
    from tenants.models import Tenant

MAX_BATCH = 500
NOT_AUTHORIZED = "entry_not_authorized"
DNS_NAME_NOT_ALLOWED = "dns_name_not_allowed"


@dataclass(frozen=True)
class SvidRequest:
    """One CSR for one entry id, as the agent sent it."""

    entry_id: str
    csr: bytes


@dataclass(frozen=True)
class SvidResult:
    """The chain for one request (leaf first), or why there is none."""

    entry_id: str
    chain: tuple[x509.Certificate, ...] = ()
    error_code: str = ""
    error: str = ""


def new_x509_svids(
    *, tenant: Tenant, agent: Agent, requests: Sequence[SvidRequest], source: str = ""
) -> list[SvidResult]:
    """Sign what is allowed in one key-manager batch; refuse the rest per request.

    The SPIFFE ID, TTL and DNS names come from the entry; only the key comes from the CSR.
    """
    if len(requests) > MAX_BATCH:
        raise InvalidEntry(f"at most {MAX_BATCH} CSRs per batch", code="batch_too_large")
    entries = authorized_entries_by_id(
        agent,
        [r.entry_id for r in requests],
        only=("spiffe_id", "x509_svid_ttl", "dns_names"),
    )
    results: list[SvidResult | None] = [None] * len(requests)
    to_sign: list[tuple[int, LeafRequest]] = []
    not_allowed = _dns_names_not_allowed(entries.values())
    for index, request in enumerate(requests):
        entry = entries.get(normalized_entry_id(request.entry_id))
        if entry is None:
            results[index] = SvidResult(
                request.entry_id,
                error_code=NOT_AUTHORIZED,
                error="no such entry, or it is not authorised for this agent",
            )
            continue
        if not_allowed.intersection(entry.dns_names):
            results[index] = SvidResult(
                request.entry_id,
                error_code=DNS_NAME_NOT_ALLOWED,
                error="the entry's dns_names now name another trust domain of the platform "
                "or a reserved name; change the entry",
            )
            continue
        try:
            public_key = public_key_from_csr(request.csr)
        except InvalidSvid as exc:
            results[index] = SvidResult(request.entry_id, error_code=exc.code, error=exc.detail)
            continue
        to_sign.append(
            (
                index,
                LeafRequest(
                    spiffe_id=SpiffeId.parse(entry.spiffe_id),
                    public_key=public_key,
                    ttl=dt.timedelta(seconds=entry.x509_svid_ttl),
                    dns_names=tuple(entry.dns_names),
                ),
            )
        )
    chains = trustdomain_services.sign_x509_svids([leaf for _, leaf in to_sign])
    for (index, _), chain in zip(to_sign, chains, strict=True):
        results[index] = SvidResult(requests[index].entry_id, chain=tuple(chain))
    metering.count_svids(tenant.pk, x509=len(chains))
    for code in (NOT_AUTHORIZED, DNS_NAME_NOT_ALLOWED):
        denied = [r.entry_id for r in results if r is not None and r.error_code == code]
        if denied:
            with transaction.atomic():
                record_audit(
                    tenant=tenant,
                    actor=f"agent:{agent.spiffe_id}",
                    action="svid.x509.new",
                    outcome="failure",
                    source=source,
                    detail={"code": code, "entry_ids": [d[:64] for d in denied[:50]]},
                )
    return [r for r in results if r is not None]


def _dns_names_not_allowed(entries: Iterable[Entry]) -> set[str]:
    names = {name for entry in entries for name in entry.dns_names}
    if not names:
        return set()
    return dns_policy.names_not_allowed_now(names, tenant_trust_domain())
