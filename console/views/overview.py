"""The tenant's overview: trust domain, key manager, upstream, authorities, bundle, agents."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from console.access import Console, tenant_page
from console.views.common import page
from issuance.models import Agent, Entry
from tenants import roles
from tenants.models import Membership
from trustdomains import services as trust_domains
from trustdomains.api.serializers import TrustDomainSerializer


def home(request: HttpRequest) -> HttpResponse:
    """/console/: the member's tenant, or a choice when it belongs to several."""
    if not request.user.is_authenticated:
        from django.contrib.auth.views import redirect_to_login

        return redirect_to_login(request.get_full_path(), "/login")
    connection.set_schema_to_public()
    memberships = list(
        Membership.objects.filter(user=request.user, active=True)
        .select_related("tenant")
        .order_by("tenant__name")
    )
    if len(memberships) == 1:
        return redirect(landing(memberships[0].role), slug=memberships[0].tenant.slug)
    return render(request, "console/choose.html", {"memberships": memberships})


# The pages in the order of the console's menu: a member lands on the first its role reads.
SECTIONS = (
    ("trust_domain", "console:overview"),
    ("entries", "console:entries"),
    ("audit", "console:audit"),
)


def landing(role: str) -> str:
    held = roles.grants(role)
    return next(
        (name for resource, name in SECTIONS if roles.allows(held, resource, roles.READ)),
        "console:overview",
    )


def duration(span: dt.timedelta) -> str:
    """A lifetime as people read it: "1 d 2 h", "23 h 59 m", "4 m 10 s"."""
    seconds = max(int(span.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} m"
    return f"{minutes} m {seconds} s"


def _timeline(authorities: list[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """Each authority with its lifetime as a bar: where it starts and ends on a shared axis."""
    if not authorities:
        return []
    parsed = [
        (a, dt.datetime.fromisoformat(a["not_before"]), dt.datetime.fromisoformat(a["not_after"]))
        for a in authorities
    ]
    start = min(nb for _, nb, _ in parsed)
    end = max(na for _, _, na in parsed)
    span = max((end - start).total_seconds(), 1.0)
    rows = []
    for authority, not_before, not_after in sorted(parsed, key=lambda p: p[1]):
        state = "tainted" if authority["tainted"] else authority["status"]
        if authority.get("revoked"):
            state = "revoked"
        rows.append(
            {
                **authority,
                "state": state,
                "not_before_at": not_before,
                "not_after_at": not_after,
                "lifetime": duration(not_after - not_before),
                "remaining": duration(not_after - now),
                # Width classes in steps of 5% keep the page free of inline styles (CSP).
                "offset": int((not_before - start).total_seconds() / span * 20) * 5,
                "width": max(5, round((not_after - not_before).total_seconds() / span * 20) * 5),
            }
        )
    return rows


def start(request: HttpRequest, slug: str) -> HttpResponse:
    """A tenant's first page for the signed-in member's role (from the tenant chooser)."""
    if not request.user.is_authenticated:
        from django.contrib.auth.views import redirect_to_login

        return redirect_to_login(request.get_full_path(), "/login")
    connection.set_schema_to_public()
    membership = Membership.objects.filter(
        user=request.user, active=True, tenant__slug=slug
    ).first()
    if membership is None:
        from console.access import not_found

        return not_found(request)
    return redirect(landing(membership.role), slug=slug)


@tenant_page("trust_domain")
def overview(request: HttpRequest, console: Console) -> HttpResponse:
    trust_domain = TrustDomainSerializer(trust_domains.get_trust_domain()).data
    now = timezone.now()
    context = {
        "trust_domain": trust_domain,
        "x509_timeline": _timeline(list(trust_domain["x509_authorities"]), now),
        "jwt_timeline": _timeline(list(trust_domain["jwt_authorities"]), now),
        "agents": Agent.objects.filter(banned=False).count(),
        "entries": Entry.objects.count(),
    }
    return page(request, console, "console/overview.html", context, section="overview")


@tenant_page("bundle")
def bundle(request: HttpRequest, console: Console) -> HttpResponse:
    """The SPIFFE bundle as a file (`?format=pem` for the X.509 authorities in PEM)."""
    current = trust_domains.current_bundle()
    name = console.tenant.trust_domain
    if request.GET.get("format") == "pem":
        response = HttpResponse(current.x509_pem(), content_type="application/x-pem-file")
        response["Content-Disposition"] = f'attachment; filename="{name}-bundle.pem"'
    else:
        response = HttpResponse(current.to_json(), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}-bundle.json"'
    return response
