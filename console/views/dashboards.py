"""The operator's usage over time across tenants, billing (close a month, invoices, revenue per
plan) and the platform audit trail (filter, verify a chain, export)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render

from console.access import operator_page
from console.charts import daily_chart
from console.views.audit import EXPORTS, OUTCOMES, filtered_events
from hallmark.errors import HallmarkError
from tenants.audit import listing
from tenants.audit.verify import verify_chain
from tenants.billing import services as invoicing
from tenants.billing.render import money
from tenants.metering import services as metering
from tenants.models import AuditEvent, Operator, Tenant
from tenants.ratelimit import client_address

PLATFORM_CHARTS = (
    ("x509_svids_issued", "X.509-SVIDs issued, all tenants"),
    ("jwt_svids_issued", "JWT-SVIDs issued, all tenants"),
    ("agents_active", "Agents active, all tenants"),
    ("api_calls", "API calls, all tenants"),
)
TOP_TENANTS = 100
AUDIT_PAGE = 100
INVOICES_SHOWN = 500


def _range(request: HttpRequest) -> tuple[dt.date, dt.date, str]:
    try:
        first, last = metering.parse_range(request.GET.get("from"), request.GET.get("to"))
    except HallmarkError as refused:
        first, last = metering.parse_range(None, None)
        return first, last, f"{refused.detail} ({refused.code})"
    return first, last, ""


@operator_page
def usage(request: HttpRequest, operator: Operator) -> HttpResponse:
    """Every tenant's usage a day, summed into charts; the busiest tenants in a table."""
    first, last, error = _range(request)
    figures = metering.platform_summary(first, last)
    tenants = figures["tenants"]
    days = figures["days"]
    ranked = sorted(
        tenants,
        key=lambda t: -(t["totals"]["x509_svids_issued"] + t["totals"]["jwt_svids_issued"]),
    )
    context = {
        "operator": operator,
        "section": "usage",
        "figures": figures,
        "error": error,
        "range": {"from": request.GET.get("from") or figures["from"], "to": figures["to"]},
        "charts": [daily_chart(key, title, days) for key, title in PLATFORM_CHARTS],
        "tenants": ranked[:TOP_TENANTS],
        "tenant_count": len(tenants),
        "shown": min(len(tenants), TOP_TENANTS),
    }
    return render(request, "console/operator/usage.html", context, status=400 if error else 200)


def _previous_month(today: dt.date) -> str:
    last = today.replace(day=1) - dt.timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


@operator_page
def billing(request: HttpRequest, operator: Operator) -> HttpResponse:
    """GET: invoices of a month and revenue per plan; POST `period`: close that month."""
    connection.set_schema_to_public()
    today = dt.datetime.now(tz=dt.UTC).date()
    message, error, status = "", "", 200
    period = (request.POST.get("period") or request.GET.get("period") or "").strip()[:16]
    if request.method == "POST":
        try:
            closed = billing_close(period, operator, request)
        except HallmarkError as refused:
            error, status = f"{refused.detail} ({refused.code})", 400
        else:
            message = (
                f"Closed {closed['period']}: {len(closed['invoices'])} invoice"
                f"{'s' if len(closed['invoices']) != 1 else ''}, {closed['created']} new."
            )
    elif request.method != "GET":
        raise Http404
    shown = period if invoicing.PERIOD.match(period) else _latest_period() or _previous_month(today)
    from tenants.billing.models import Invoice

    listed = Invoice.objects.filter(period=shown).select_related("tenant")
    invoices = list(listed.order_by("tenant__slug")[:INVOICES_SHOWN])
    context = {
        "operator": operator,
        "section": "billing",
        "message": message,
        "error": error,
        "period": period or _previous_month(today),
        "shown": shown,
        "revenue": [
            {**row, "amount": money(row["total"], row["currency"])}
            for row in invoicing.revenue_by_plan(shown)
        ],
        "invoices": [{"invoice": i, "total": money(i.total, i.currency)} for i in invoices],
        "invoice_count": listed.count() if len(invoices) == INVOICES_SHOWN else len(invoices),
        "periods": _periods(),
    }
    return render(request, "console/operator/billing.html", context, status=status)


def billing_close(period: str, operator: Operator, request: HttpRequest) -> dict[str, Any]:
    """Close the month as `POST /api/v1/operator/billing/close-period` does (audited there)."""
    return invoicing.close_period(
        period=period, actor=f"operator:{operator.email}", source=client_address(request)
    )


def _periods() -> list[str]:
    from tenants.billing.models import Invoice

    return list(
        Invoice.objects.order_by("-period").values_list("period", flat=True).distinct()[:24]
    )


def _latest_period() -> str | None:
    periods = _periods()
    return periods[0] if periods else None


def _audit_filters(request: HttpRequest) -> dict[str, str]:
    names = ("tenant", "action", "actor", "outcome")
    return {name: request.GET.get(name, "").strip()[:300] for name in names}


def _audit_events(filters: dict[str, str]) -> QuerySet[AuditEvent] | None:
    """The filtered trail; `tenant` is a slug, or `platform` for the platform's own events.
    None when the slug names no tenant."""
    events = AuditEvent.objects.all()
    scope = filters["tenant"]
    if scope == "platform":
        events = events.filter(tenant__isnull=True)
    elif scope:
        tenant = Tenant.objects.filter(slug=scope).exclude(schema_name="public").first()
        if tenant is None:
            return None
        events = events.filter(tenant=tenant)
    return filtered_events(events, filters)


@operator_page
def audit(request: HttpRequest, operator: Operator) -> HttpResponse:
    """Every trail (`?tenant=platform` the platform's own, `?tenant=<slug>` one tenant's);
    `?verify=1` re-hashes the chain in view; `?export=jsonl|csv` downloads the filtered trail."""
    connection.set_schema_to_public()
    filters = _audit_filters(request)
    events = _audit_events(filters)
    error = "" if events is not None else f"no tenant {filters['tenant']!r}"
    if events is None:
        events = AuditEvent.objects.none()
    kind = request.GET.get("export", "")
    if kind:
        if kind not in EXPORTS or error:
            raise Http404
        query = listing.Query(filters={}, before_id=None, page_size=0, format=kind)
        response = StreamingHttpResponse(
            listing.stream(events, query, with_tenant=True), content_type=EXPORTS[kind]
        )
        response["Content-Disposition"] = f'attachment; filename="audit-platform.{kind}"'
        return response
    verification = None
    if request.GET.get("verify") and not error:
        verification = _verify(filters["tenant"])
    before = request.GET.get("before", "")
    if before.isdigit() and len(before) < 19:
        events = events.filter(id__lt=int(before))
    window = list(events.select_related("tenant")[: AUDIT_PAGE + 1])
    context = {
        "operator": operator,
        "section": "audit",
        "events": window[:AUDIT_PAGE],
        "next_before": window[AUDIT_PAGE - 1].id if len(window) > AUDIT_PAGE else None,
        "filters": filters,
        "outcomes": OUTCOMES,
        "error": error,
        "verification": verification,
    }
    return render(request, "console/operator/audit.html", context, status=404 if error else 200)


def _verify(scope: str) -> dict[str, Any]:
    """The chain in view: a tenant's when one is chosen, else the platform's own."""
    tenant = Tenant.objects.filter(slug=scope).first() if scope and scope != "platform" else None
    result = verify_chain(tenant.pk if tenant is not None else None)
    shown = result.as_dict()
    shown["chain"] = tenant.slug if tenant is not None else "platform"
    if not result.valid and result.first_invalid_id is not None:
        shown["event"] = AuditEvent.objects.filter(pk=result.first_invalid_id).first()
    return shown


def tenant_charts(tenant: Tenant) -> list[Any]:
    """The last 30 days of one tenant, for its page on the operator dashboards."""
    first, last = metering.parse_range(None, None)
    figures = metering.tenant_usage(tenant, first, last)
    charted = (
        ("x509_svids_issued", "X.509-SVIDs issued"),
        ("jwt_svids_issued", "JWT-SVIDs issued"),
        ("agents_active", "Agents active"),
    )
    return [
        daily_chart(key, title, figures["days"], total=figures["totals"][key])
        for key, title in charted
    ]
