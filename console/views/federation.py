"""Federation: relationships with their refresh state; managed requests in and out."""

from __future__ import annotations

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from console.access import Console, tenant_page
from console.views.common import page
from federation.managed import services as managed
from federation.models import FederationRelationship
from federation.refresh import refresh_relationship, warnings
from hallmark.errors import HallmarkError

DECISIONS = {"approve": managed.approve, "reject": managed.reject, "cancel": managed.cancel}


def _render(
    request: HttpRequest, console: Console, *, message: str = "", error: str = "", status: int = 200
) -> HttpResponse:
    relationships = [
        {"relationship": r, "warnings": warnings(r)}
        for r in FederationRelationship.objects.order_by("trust_domain")
    ]
    requests = managed.requests_of(console.tenant)
    tenant_id = console.tenant.id
    context = {
        "relationships": relationships,
        "incoming": [r for r in requests if r.to_tenant_id == tenant_id],
        "outgoing": [r for r in requests if r.from_tenant_id == tenant_id],
        "message": message,
        "error": error,
    }
    return page(
        request, console, "console/federation.html", context, section="federation", status=status
    )


@tenant_page("federation")
def federation(request: HttpRequest, console: Console) -> HttpResponse:
    """GET lists; POST asks another tenant of the platform to federate (managed)."""
    if request.method == "POST":
        try:
            made = managed.create_request(
                tenant=console.tenant,
                trust_domain=request.POST.get("trust_domain", "").strip(),
                actor=console.actor,
                source=console.source,
            )
        except HallmarkError as refused:
            return _render(request, console, error=f"{refused.detail} ({refused.code})", status=400)
        return _render(request, console, message=f"Asked {made.to_trust_domain} to federate.")
    return _render(request, console)


@tenant_page("federation")
def decide(
    request: HttpRequest, console: Console, request_id: uuid.UUID, decision: str
) -> HttpResponse:
    if decision not in DECISIONS or request.method != "POST":
        raise Http404
    try:
        DECISIONS[decision](
            tenant=console.tenant,
            request_id=str(request_id),
            actor=console.actor,
            source=console.source,
        )
    except managed.RequestNotFound:
        raise Http404 from None
    except HallmarkError as refused:
        return _render(request, console, error=f"{refused.detail} ({refused.code})", status=409)
    return redirect("console:federation", slug=console.tenant.slug)


@tenant_page("federation")
def refresh(request: HttpRequest, console: Console, relationship_id: uuid.UUID) -> HttpResponse:
    """Fetch a peer's bundle now (POST); a failure keeps the held bundle and says why."""
    relationship = FederationRelationship.objects.filter(pk=relationship_id).first()
    if relationship is None or request.method != "POST":
        raise Http404
    try:
        refresh_relationship(
            trust_domain=relationship.trust_domain, actor=console.actor, source=console.source
        )
    except HallmarkError as failed:
        return _render(
            request, console, error=f"Refresh failed: {failed.detail} ({failed.code})", status=502
        )
    return _render(request, console, message=f"Refreshed {relationship.trust_domain}.")
