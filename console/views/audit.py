"""The tenant's audit trail: filter, verify the hash chain, export what the filter shows."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse

from console.access import Console, tenant_page
from console.views.common import page
from tenants.audit import listing
from tenants.audit.verify import verify_chain
from tenants.models import AuditEvent

PAGE_SIZE = 100
OUTCOMES = ("success", "failure", "denied")
EXPORTS = {"jsonl": "application/jsonl", "csv": "text/csv; charset=utf-8"}


def _filters(request: HttpRequest) -> dict[str, str]:
    return {
        name: request.GET.get(name, "").strip()[:300] for name in ("action", "actor", "outcome")
    }


def filtered_events(events: QuerySet[AuditEvent], filters: dict[str, str]) -> QuerySet[AuditEvent]:
    """The console's filters: an action prefix, a part of the actor, an exact outcome."""
    if filters["action"]:
        events = events.filter(action__startswith=filters["action"])
    if filters["actor"]:
        events = events.filter(actor__icontains=filters["actor"])
    if filters["outcome"]:
        events = events.filter(outcome=filters["outcome"])
    return events.order_by("-id")


def _render(
    request: HttpRequest, console: Console, *, verification: dict[str, Any] | None = None
) -> HttpResponse:
    filters = _filters(request)
    events = filtered_events(AuditEvent.objects.filter(tenant=console.tenant), filters)
    before = request.GET.get("before", "")
    if before.isdigit() and len(before) < 19:
        events = events.filter(id__lt=int(before))
    window = list(events[: PAGE_SIZE + 1])
    context = {
        "events": window[:PAGE_SIZE],
        "filters": filters,
        "outcomes": OUTCOMES,
        "next_before": window[PAGE_SIZE - 1].id if len(window) > PAGE_SIZE else None,
        "verification": verification,
    }
    return page(request, console, "console/audit.html", context, section="audit")


@tenant_page("audit")
def audit(request: HttpRequest, console: Console) -> HttpResponse:
    return _render(request, console)


@tenant_page("audit")
def verify(request: HttpRequest, console: Console) -> HttpResponse:
    """Re-hash the whole chain now (as `GET /api/v1/audit-events/verify`) and say what broke."""
    result = verify_chain(console.tenant.pk)
    shown = result.as_dict()
    if not result.valid and result.first_invalid_id is not None:
        shown["event"] = AuditEvent.objects.filter(
            tenant=console.tenant, pk=result.first_invalid_id
        ).first()
    return _render(request, console, verification=shown)


@tenant_page("audit")
def export(request: HttpRequest, console: Console, kind: str) -> StreamingHttpResponse:
    """The filtered trail as JSON lines or CSV, the API's export format, streamed."""
    if kind not in EXPORTS:
        raise Http404
    events = filtered_events(AuditEvent.objects.filter(tenant=console.tenant), _filters(request))
    query = listing.Query(filters={}, before_id=None, page_size=0, format=kind)
    response = StreamingHttpResponse(listing.stream(events, query), content_type=EXPORTS[kind])
    name = f"audit-{console.tenant.slug}.{kind}"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
