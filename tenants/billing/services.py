"""Billing's public functions (plans, quotas, invoices) for the API, the console and issuance."""

from __future__ import annotations

from tenants.billing.invoices import (
    PERIOD,
    InvalidPeriod,
    all_invoices,
    close_period,
    parse_period,
    revenue_by_plan,
    tenant_invoice,
    tenant_invoices,
)
from tenants.billing.plans import change_plan, create_plan, get_plan, list_plans, plan_exists
from tenants.billing.quotas import (
    AgentQuotaExceeded,
    QuotaExceeded,
    audit_quota_refusal,
    check_entries,
    check_new_agent,
    effective_quotas,
    lock_agent_admission,
)
from tenants.billing.render import as_csv, as_dict, as_pdf
from tenants.models import Tenant


def plan_name(tenant: Tenant) -> str:
    return tenant.plan or ""


__all__ = [
    "PERIOD",
    "AgentQuotaExceeded",
    "InvalidPeriod",
    "QuotaExceeded",
    "all_invoices",
    "audit_quota_refusal",
    "as_csv",
    "as_dict",
    "as_pdf",
    "change_plan",
    "check_entries",
    "check_new_agent",
    "close_period",
    "create_plan",
    "effective_quotas",
    "get_plan",
    "list_plans",
    "lock_agent_admission",
    "parse_period",
    "plan_exists",
    "plan_name",
    "revenue_by_plan",
    "tenant_invoice",
    "tenant_invoices",
]
