"""The tenant's usage (a chart a day per metric) and its invoices (JSON, CSV, PDF downloads)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse

from console.access import Console, tenant_page
from console.charts import Chart, daily_chart
from console.views.common import page
from hallmark.errors import HallmarkError
from tenants.billing import services as billing
from tenants.billing.render import money
from tenants.metering import services as metering

# What the usage page draws, in this order, with what each figure means.
CHARTED = (
    ("x509_svids_issued", "X.509-SVIDs issued"),
    ("jwt_svids_issued", "JWT-SVIDs issued"),
    ("agents_active", "Agents active"),
    ("agent_hours", "Agent-hours"),
    ("entries", "Registration entries"),
    ("api_calls", "API calls"),
)
QUOTA_OF = {
    "max_agents": "agents_active",
    "max_entries": "entries",
}
DOWNLOADS = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "pdf": "application/pdf",
}


def usage_charts(days: list[dict[str, Any]], totals: dict[str, int]) -> list[Chart]:
    return [daily_chart(key, title, days, total=totals.get(key)) for key, title in CHARTED]


@tenant_page("usage")
def usage(request: HttpRequest, console: Console) -> HttpResponse:
    """`?from=&to=` as the usage API (the last 30 days by default); a bad range says why."""
    start, end = request.GET.get("from", ""), request.GET.get("to", "")
    try:
        first, last = metering.parse_range(start, end)
    except HallmarkError as refused:
        first, last = metering.parse_range(None, None)
        error, status = f"{refused.detail} ({refused.code})", 400
    else:
        error, status = "", 200
    figures = metering.tenant_usage(console.tenant, first, last)
    month_svids = metering.svids_this_month(console.tenant)
    quotas = figures["quotas"]
    context = {
        "figures": figures,
        "charts": usage_charts(figures["days"], figures["totals"]),
        "range": {"from": start or figures["from"], "to": end or figures["to"]},
        "error": error,
        "quotas": [
            {
                "name": "max_svids_per_month",
                "limit": quotas.get("max_svids_per_month"),
                "used": month_svids,
                "note": "SVIDs this month (renewals past it are billed as overage, never refused)",
            },
            *(
                {
                    "name": name,
                    "limit": quotas.get(name),
                    "used": figures["days"][-1][metric] if figures["days"] else 0,
                    "note": "the last day's figure",
                }
                for name, metric in QUOTA_OF.items()
            ),
        ],
    }
    return page(request, console, "console/usage.html", context, section="usage", status=status)


@tenant_page("billing")
def invoices(request: HttpRequest, console: Console) -> HttpResponse:
    rows = [
        {
            "invoice": invoice,
            "total": money(invoice.total, invoice.currency),
            "lines": [
                {"line": line, "amount": money(line.amount, invoice.currency)}
                for line in invoice.lines.all()
            ],
        }
        for invoice in billing.tenant_invoices(console.tenant)
    ]
    return page(request, console, "console/invoices.html", {"rows": rows}, section="invoices")


@tenant_page("billing")
def invoice_download(
    request: HttpRequest, console: Console, invoice_id: uuid.UUID, kind: str
) -> HttpResponse:
    """One invoice as a file; another tenant's id is the same 404 as a missing one."""
    if kind not in DOWNLOADS:
        raise Http404
    try:
        invoice = billing.tenant_invoice(console.tenant, invoice_id)
    except HallmarkError:
        raise Http404 from None
    tenant = console.tenant
    if kind == "csv":
        body: bytes | str = billing.as_csv(invoice)
    elif kind == "pdf":
        body = billing.as_pdf(invoice, tenant_name=tenant.name, trust_domain=tenant.trust_domain)
    else:
        body = json.dumps(billing.as_dict(invoice), indent=2)
    answer = HttpResponse(body, content_type=DOWNLOADS[kind])
    name = f"hallmark-invoice-{invoice.period}-{tenant.slug}.{kind}"
    answer["Content-Disposition"] = f'attachment; filename="{name}"'
    return answer
