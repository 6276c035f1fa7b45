"""Quotas: the plan's, overridden per tenant by the operator; checked where writes happen.

The apps that own the rows call these checks inside the transaction that writes them, under
the lock that serialises their writes (issuance: the tenant's revision lock for entries, an
advisory lock for attestations), so two writes at once cannot both slip under a quota.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet

from hallmark.errors import HallmarkError
from tenants.billing.models import Plan
from tenants.models import Tenant

QUOTA_NAMES = ("max_agents", "max_entries", "max_svids_per_month")


class QuotaExceeded(HallmarkError):
    """403 `quota_exceeded`: the write would go past a quota of the tenant; nothing stored."""

    code = "quota_exceeded"
    http_status = 403

    def __init__(self, quota: str, limit: int, detail: str) -> None:
        super().__init__(f"quota {quota} ({limit}) reached: {detail}")
        self.quota = quota
        self.limit = limit


class AgentQuotaExceeded(QuotaExceeded):
    """`quota_exceeded` at node attestation: the agent API answers RESOURCE_EXHAUSTED."""

    http_status = 429  # the agent API maps 429 to RESOURCE_EXHAUSTED


def plan_of(tenant: Tenant) -> Plan | None:
    if not tenant.plan:
        return None
    return Plan.objects.filter(name=tenant.plan).first()


def effective_quotas(tenant: Tenant, plan: Plan | None = None) -> dict[str, int | None]:
    """The plan's quotas with the tenant's own overrides on top (None: unlimited)."""
    plan = plan if plan is not None else plan_of(tenant)
    quotas: dict[str, int | None] = {
        name: getattr(plan, name) if plan is not None else None for name in QUOTA_NAMES
    }
    overrides: dict[str, Any] = tenant.quotas or {}
    for name in QUOTA_NAMES:
        if overrides.get(name) is not None:
            quotas[name] = int(overrides[name])
    return quotas


def _fresh(tenant: Tenant) -> Tenant:
    """The tenant row read now (plan and quotas may have changed since the request began)."""
    return Tenant.objects.get(pk=tenant.pk)


def check_entries(tenant: Tenant, *, entries: QuerySet[Any], adding: int) -> None:
    """Refuse `adding` entries when they and the `entries` stored would pass `max_entries`.

    The stored entries are counted only under a limit, and only up to it: a tenant with no
    limit (a fleet of 100,000 entries, say) does not pay a count of its whole table on every
    registration.
    """
    limit = effective_quotas(_fresh(tenant))["max_entries"]
    if limit is None:
        return
    stored = entries[:limit].count()  # SELECT COUNT(*) FROM (... LIMIT limit): <= limit
    if stored + adding > limit:
        held = f"{stored} entries stored" if stored < limit else f"{limit} or more entries stored"
        raise QuotaExceeded("max_entries", limit, f"{held}, {adding} more would pass it")


def lock_agent_admission(tenant: Tenant) -> None:
    """Serialise new-agent admissions of one tenant for the rest of the transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"hallmark:agents:{tenant.pk}"]
        )


def check_new_agent(tenant: Tenant, *, live_agents: int) -> None:
    """Refuse a new agent past `max_agents`, or once the month's SVIDs passed their quota.

    Call inside the attestation's transaction after `lock_agent_admission`. Agents that exist
    already renew their SVIDs whatever the monthly count (billed as overage).
    """
    from tenants.metering import services as metering

    quotas = effective_quotas(_fresh(tenant))
    limit = quotas["max_agents"]
    if limit is not None and live_agents + 1 > limit:
        raise AgentQuotaExceeded(
            "max_agents", limit, f"{live_agents} agents attested; a new one would pass it"
        )
    svid_limit = quotas["max_svids_per_month"]
    if svid_limit is not None:
        issued = metering.svids_this_month(tenant)
        if issued >= svid_limit:
            raise AgentQuotaExceeded(
                "max_svids_per_month",
                svid_limit,
                f"{issued} SVIDs issued this month; existing agents keep renewing (overage), "
                "new agents wait for the next month or a larger quota",
            )


def audit_quota_refusal(
    exc: QuotaExceeded, *, tenant: Tenant, actor: str, action: str, source: str = ""
) -> None:
    """The denied row of a write refused for a quota (its own transaction: the write's
    rolled back)."""
    from tenants.services import record_audit

    with transaction.atomic():
        record_audit(
            tenant=tenant,
            actor=actor,
            action=action,
            outcome="denied",
            source=source,
            detail={"code": exc.code, "quota": exc.quota, "limit": exc.limit},
        )
