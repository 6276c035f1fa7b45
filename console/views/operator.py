"""The operator dashboards: sign-in, tenants (search, sort), a tenant's page, platform health."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import connection
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from rest_framework.exceptions import Throttled

from config.health import platform_checks
from console.access import OPERATOR_SESSION_KEY, current_operator, operator_page
from console.views import dashboards
from issuance.services import agents
from tenants import operators
from tenants.api.errors import ApiError
from tenants.billing import services as billing
from tenants.metering import services as metering
from tenants.models import AuditEvent, Operator, Tenant
from tenants.ratelimit import client_address

SORTS = {
    "name": ("name",),
    "-name": ("-name",),
    "created": ("created_at",),
    "-created": ("-created_at",),
    "status": ("status", "name"),
    "plan": ("plan", "name"),
}


class OperatorLoginForm(forms.Form):
    email = forms.EmailField(max_length=254)
    password = forms.CharField(max_length=200, widget=forms.PasswordInput)


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target.startswith("/operator/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return "/operator/"


@require_http_methods(["GET", "POST"])
def login(request: HttpRequest) -> HttpResponse:
    form = OperatorLoginForm(request.POST or None)
    context: dict[str, Any] = {"form": form, "next": _next(request), "error": ""}
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                operator = operators.authenticate_operator(
                    email=form.cleaned_data["email"],
                    password=form.cleaned_data["password"],
                    request=request,
                )
            except Throttled as limited:
                context["error"] = "Too many failed sign-ins; try again later."
                response = render(request, "console/operator/login.html", context, status=429)
                response["Retry-After"] = str(int(limited.wait or 1))
                return response
            except ApiError as refused:
                context["error"] = (
                    "Wrong email or password."
                    if refused.error_code == "invalid_credentials"
                    else str(refused.detail)
                )
                status = refused.status_code
            else:
                request.session.cycle_key()  # a new session id at sign-in (no fixation)
                request.session[OPERATOR_SESSION_KEY] = str(operator.pk)
                return HttpResponseRedirect(_next(request))
    context["operator"] = current_operator(request)
    return render(request, "console/operator/login.html", context, status=status)


@require_http_methods(["POST"])
def logout(request: HttpRequest) -> HttpResponse:
    request.session.pop(OPERATOR_SESSION_KEY, None)
    request.session.cycle_key()
    return redirect("operator:login")


@operator_page
def tenants(request: HttpRequest, operator: Operator) -> HttpResponse:
    connection.set_schema_to_public()
    query = request.GET.get("q", "").strip()
    sort = request.GET.get("sort", "-created")
    if sort not in SORTS and sort not in ("agents", "svids"):
        sort = "-created"
    rows = Tenant.objects.exclude(schema_name="public")
    if query:
        rows = rows.filter(
            Q(slug__icontains=query) | Q(name__icontains=query) | Q(trust_domain__icontains=query)
        )
    listed = list(rows.order_by(*SORTS.get(sort, ("-created_at",)))[:500])
    counts = agents.unbanned_agent_counts(listed)
    svids = metering.svids_this_month_of([str(t.pk) for t in listed])
    entries = [
        {"tenant": t, "agents": counts.get(str(t.pk), 0), "svids": svids.get(str(t.pk), 0)}
        for t in listed
    ]
    if sort in ("agents", "svids"):
        entries.sort(key=lambda e: -e[sort])
    context = {
        "operator": operator,
        "rows": entries,
        "query": query,
        "sort": sort,
        "section": "tenants",
    }
    return render(request, "console/operator/tenants.html", context)


def _quota(text: str) -> int | None:
    if not text.strip():
        return None
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


@operator_page
def tenant(request: HttpRequest, operator: Operator, tenant_id: str) -> HttpResponse:
    """A tenant: plan and quotas (edit), suspend or reactivate, its latest audit rows."""
    connection.set_schema_to_public()
    try:
        found = operators.get_tenant(tenant_id)
    except (ApiError, ValueError):
        from console.access import not_found

        return not_found(request)
    errors: dict[str, str] = {}
    if request.method == "POST":
        changes: dict[str, Any] = {}
        if request.POST.get("status") in ("active", "suspended"):
            changes["status"] = request.POST["status"]
        else:
            changes["plan"] = request.POST.get("plan", "").strip()[:64]
            if not billing.plan_exists(changes["plan"]):  # the operator API's check
                errors["plan"] = f"no plan {changes['plan']!r}"
            quotas = {}
            for name in operators.QUOTA_NAMES:
                try:
                    quotas[name] = _quota(request.POST.get(name, ""))
                except ValueError:
                    errors[name] = "a whole number, 0 or more (empty: no limit)"
            changes["quotas"] = quotas
        if not errors:
            operators.change_tenant(
                found.pk,
                changes=changes,
                actor=f"operator:{operator.email}",
                source=client_address(request),
            )
            return redirect("operator:tenant", tenant_id=found.pk)
    context = {
        "operator": operator,
        "tenant": found,
        "quotas": [
            {
                "name": name,
                "value": request.POST.get(name) if errors else found.quotas.get(name),
                "error": errors.get(name, ""),
            }
            for name in operators.QUOTA_NAMES
        ],
        "agents": agents.unbanned_agent_counts([found]).get(str(found.pk), 0),
        "plans": billing.list_plans(),
        "errors": errors,
        "events": AuditEvent.objects.filter(tenant=found).order_by("-id")[:25],
        "charts": dashboards.tenant_charts(found),
        "section": "tenants",
    }
    return render(request, "console/operator/tenant.html", context, status=400 if errors else 200)


@operator_page
def health(request: HttpRequest, operator: Operator) -> HttpResponse:
    checks = platform_checks()
    context = {
        "operator": operator,
        "checks": sorted(checks.items()),
        "healthy": all(value == "ok" for value in checks.values()),
        "section": "health",
        **platform_state(),
    }
    return render(request, "console/operator/health.html", context)


def platform_state() -> dict[str, Any]:
    """What Redis knows beyond up/down: each agent-API and bundle-endpoint process's last
    heartbeat, the last rotation sweep and how long it took, and Celery's queue. Redis down:
    nothing of it (the checks above say so)."""
    import time

    import kombu.exceptions
    import redis

    from config.beatmetrics import PlatformCollector, queue_depths
    from config.celery import app as celery_app
    from config.health import process_heartbeats, redis_client
    from trustdomains.tasks import last_sweep, rotation_interval

    try:
        client = redis_client()
        processes = {
            kind: process_heartbeats(kind, client) for kind in ("agent-api", "bundle-endpoint")
        }
        sweep = last_sweep()
        queued = queue_depths(celery_app, PlatformCollector(celery_app).queue_names())
        queue = {"queued": sum(queued.values()), "reserved": client.hlen("unacked")}
    except (redis.RedisError, kombu.exceptions.OperationalError, ValueError):
        return {"state_error": "Redis did not answer: no process, sweep or queue figures"}
    now = time.time()
    interval = rotation_interval()
    queued_at, finished_at = sweep["queued_at"], sweep["finished_at"]
    rotation: dict[str, Any] = {"interval": interval, "tenants": sweep["tenants"], "seen": False}
    if queued_at is not None:
        since = now - float(queued_at)
        rotation.update(
            seen=True,
            since=round(since, 1),
            took=round(float(finished_at) - float(queued_at), 1) if finished_at else None,
            running=round(since, 1) if finished_at is None else None,
            late=since > 2 * interval,
        )
    return {"processes": processes, "rotation": rotation, "queue": queue}
