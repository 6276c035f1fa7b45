"""Closing a month: one invoice per tenant, made once (a unique constraint holds it)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from django.db import IntegrityError, connection, transaction

from hallmark.errors import HallmarkError
from tenants.billing.models import Invoice, InvoiceLine, Plan
from tenants.billing.quotas import effective_quotas, plan_of
from tenants.models import Tenant
from tenants.services import record_audit

PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
DEFAULT_CURRENCY = "EUR"


class InvalidPeriod(HallmarkError):
    """400 `invalid_period` (not YYYY-MM) or `period_not_ended` (this month or later)."""

    code = "invalid_period"
    http_status = 400


class InvoiceNotFound(HallmarkError):
    code = "not_found"
    http_status = 404


def parse_period(period: object, *, today: dt.date | None = None) -> tuple[int, int]:
    """(year, month) of a month that has ended."""
    match = PERIOD.match(period) if isinstance(period, str) else None
    if match is None:
        raise InvalidPeriod(f"period must be a month YYYY-MM; got {str(period)[:40]!r}")
    year, month = int(match.group(1)), int(match.group(2))
    today = today or dt.datetime.now(tz=dt.UTC).date()
    if (year, month) >= (today.year, today.month):
        raise InvalidPeriod(
            f"{period} has not ended; close a month after its last day", code="period_not_ended"
        )
    return year, month


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def invoice_lines(
    plan: Plan | None, quotas: dict[str, int | None], usage: dict[str, int]
) -> list[dict[str, Any]]:
    """The plan's price, then each overage, in minor units of the plan's currency."""
    lines: list[dict[str, Any]] = []
    if plan is not None:
        lines.append(
            {
                "kind": "plan",
                "description": f"Plan {plan.display_name or plan.name}, one month",
                "quantity": 1,
                "unit_price": plan.price_per_month,
                "unit": 1,
                "amount": plan.price_per_month,
            }
        )
    included = quotas.get("max_svids_per_month")
    svids = usage["x509_svids_issued"] + usage["jwt_svids_issued"]
    if plan is not None and included is not None and svids > included:
        over = svids - included
        unit = max(plan.svid_overage_unit, 1)
        lines.append(
            {
                "kind": "svid_overage",
                "description": f"SVIDs past the {included} included ({svids} issued)",
                "quantity": over,
                "unit_price": plan.svid_overage_price,
                "unit": unit,
                "amount": _ceil_div(over * plan.svid_overage_price, unit),
            }
        )
    return lines


def _make_invoice(
    tenant: Tenant, period: str, year: int, month: int, *, actor: str, source: str
) -> tuple[Invoice, bool]:
    from tenants.metering import services as metering

    existing = Invoice.objects.filter(tenant=tenant, period=period).first()
    if existing is not None:
        return existing, False
    plan = plan_of(tenant)
    quotas = effective_quotas(tenant, plan)
    usage = metering.month_svids(tenant, year, month)
    lines = invoice_lines(plan, quotas, usage)
    try:
        with transaction.atomic():
            invoice = Invoice.objects.create(
                tenant=tenant,
                period=period,
                plan=plan.name if plan is not None else "",
                currency=plan.currency if plan is not None else DEFAULT_CURRENCY,
                total=sum(line["amount"] for line in lines),
                usage={**usage, "quotas": quotas},
            )
            InvoiceLine.objects.bulk_create(
                InvoiceLine(invoice=invoice, position=n, **line) for n, line in enumerate(lines)
            )
            record_audit(
                tenant=tenant,
                actor=actor,
                action="invoice.create",
                target=str(invoice.id),
                source=source,
                detail={"period": period, "total": invoice.total, "currency": invoice.currency},
            )
    except IntegrityError:  # a concurrent close made it first: that one is the invoice
        return Invoice.objects.get(tenant=tenant, period=period), False
    return invoice, True


def close_period(*, period: object, actor: str, source: str = "") -> dict[str, Any]:
    """One invoice per tenant for the month; closing again answers the same invoices."""
    from tenants.metering import rollup

    year, month = parse_period(period)
    name = f"{year:04d}-{month:02d}"
    rollup.roll_up()  # what Redis still holds of the month counts
    connection.set_schema_to_public()
    made: list[tuple[Invoice, bool]] = []
    for tenant in Tenant.objects.exclude(schema_name="public").order_by("created_at"):
        made.append(_make_invoice(tenant, name, year, month, actor=actor, source=source))
    created = [invoice for invoice, new in made if new]
    record_audit(
        tenant=None,
        actor=actor,
        action="billing.close_period",
        target=name,
        source=source,
        detail={"invoices": len(made), "created": len(created)},
    )
    return {"period": name, "invoices": [i for i, _ in made], "created": len(created)}


def tenant_invoices(tenant: Tenant) -> list[Invoice]:
    connection.set_schema_to_public()
    return list(Invoice.objects.filter(tenant=tenant).prefetch_related("lines"))


def tenant_invoice(tenant: Tenant, invoice_id: object) -> Invoice:
    """The tenant's invoice; another tenant's id answers the same 404 as a missing one."""
    connection.set_schema_to_public()
    try:
        key = uuid.UUID(str(invoice_id))
    except ValueError:
        raise InvoiceNotFound("no such invoice") from None
    invoice = Invoice.objects.filter(tenant=tenant, pk=key).prefetch_related("lines").first()
    if invoice is None:
        raise InvoiceNotFound("no such invoice")
    return invoice


def all_invoices(period: str | None = None) -> list[Invoice]:
    connection.set_schema_to_public()
    query = Invoice.objects.select_related("tenant").prefetch_related("lines")
    if period:
        query = query.filter(period=period)
    return list(query.order_by("-period", "tenant__slug"))


def revenue_by_plan(period: str) -> list[dict[str, Any]]:
    """Per plan and currency: how many invoices a closed month made and what they bill."""
    from django.db.models import Count, Sum

    connection.set_schema_to_public()
    rows = (
        Invoice.objects.filter(period=period)
        .values("plan", "currency")
        .annotate(invoices=Count("id"), total=Sum("total"))
        .order_by("plan", "currency")
    )
    return [
        {
            "plan": r["plan"],
            "currency": r["currency"],
            "invoices": r["invoices"],
            "total": int(r["total"] or 0),
        }
        for r in rows
    ]
