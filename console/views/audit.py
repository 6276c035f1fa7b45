"""The tenant's audit trail, filtered, read-only (verifying and exporting come with the chain)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from console.access import Console, tenant_page
from console.views.common import page
from tenants.models import AuditEvent

PAGE_SIZE = 100


@tenant_page("audit")
def audit(request: HttpRequest, console: Console) -> HttpResponse:
    filters = {name: request.GET.get(name, "").strip() for name in ("action", "actor", "outcome")}
    events = AuditEvent.objects.filter(tenant=console.tenant).order_by("-id")
    if filters["action"]:
        events = events.filter(action__startswith=filters["action"])
    if filters["actor"]:
        events = events.filter(actor__icontains=filters["actor"])
    if filters["outcome"]:
        events = events.filter(outcome=filters["outcome"])
    before = request.GET.get("before", "")
    if before.isdigit():
        events = events.filter(id__lt=int(before))
    window = list(events[: PAGE_SIZE + 1])
    context = {
        "events": window[:PAGE_SIZE],
        "filters": filters,
        "outcomes": ("success", "failure", "denied"),
        "next_before": window[PAGE_SIZE - 1].id if len(window) > PAGE_SIZE else None,
    }
    return page(request, console, "console/audit.html", context, section="audit")
