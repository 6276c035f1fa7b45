"""Who is looking at a console page, and what they may do there.

Tenant pages live under /console/<tenant slug>/: the signed-in user (Django session from
/login) must be an active member of that tenant, else the page is a 404 as if it did not
exist. The member's role decides through tenants.roles, exactly as for the API: a page names
its resource, GET reads it and any other method writes it. A refused write is audited and
answered 403 whatever the page offered. The tenant's own schema is entered for the view.

Operator pages live under /operator/: an operator (tenants.models.Operator, a principal of
its own) signs in at /operator/login; its id sits in the session under its own key, so a
tenant user's session never opens an operator page and an operator's never a tenant page.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from tenants import roles
from tenants.models import Membership, Operator, Tenant
from tenants.ratelimit import client_address
from tenants.scoping import tenant_schema
from tenants.services import record_denied_write

OPERATOR_SESSION_KEY = "hallmark_operator_id"

View = Callable[..., HttpResponse]


@dataclass
class ConsolePrincipal:
    """A member acting through the console (the shape tenants.apitokens expects)."""

    user: Any
    tenant: Tenant
    role: str
    grants: frozenset[roles.Grant]
    spiffe_id_prefix: str = ""
    is_authenticated: bool = True

    def __str__(self) -> str:
        return f"user:{self.user.get_username()}"


@dataclass
class Console:
    """What every tenant page knows: the tenant, the member, what the role allows."""

    tenant: Tenant
    principal: ConsolePrincipal
    source: str
    memberships: list[Membership] = field(default_factory=list)

    @property
    def actor(self) -> str:
        return str(self.principal)

    @property
    def role(self) -> str:
        return self.principal.role

    def allows(self, resource: str, access: str) -> bool:
        return roles.allows(self.principal.grants, resource, access)

    @property
    def can(self) -> dict[str, bool]:
        """`can.entries_write` and so on, for the templates: what is not allowed is not shown."""
        return {
            f"{resource}_{access}": self.allows(resource, access)
            for resource in roles.RESOURCES
            for access in (roles.READ, roles.WRITE)
        }


def error_page(request: HttpRequest, status: int, title: str, detail: str) -> HttpResponse:
    return render(
        request,
        "console/error.html",
        {"title": title, "detail": detail, "status": status},
        status=status,
    )


def not_found(request: HttpRequest) -> HttpResponse:
    return error_page(request, 404, "Not found", "There is no such page, or it is not yours.")


def _membership(request: HttpRequest, slug: str) -> tuple[Membership | None, list[Membership]]:
    connection.set_schema_to_public()
    memberships = list(
        Membership.objects.filter(user=request.user, active=True)
        .select_related("tenant")
        .order_by("tenant__name")
    )
    chosen = next((m for m in memberships if m.tenant.slug == slug), None)
    return chosen, memberships


def tenant_page(resource: str) -> Callable[[View], View]:
    """A tenant console page about `resource`: member only, role-checked, in the schema."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def page(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), "/login")
            membership, memberships = _membership(request, slug)
            if membership is None:
                return not_found(request)
            tenant = membership.tenant
            principal = ConsolePrincipal(
                user=request.user,
                tenant=tenant,
                role=membership.role,
                grants=roles.grants(membership.role),
            )
            console = Console(tenant, principal, client_address(request), memberships)
            if tenant.status != Tenant.Status.ACTIVE:
                return error_page(
                    request,
                    403,
                    "Tenant suspended",
                    "This tenant is suspended by the platform operator; contact them.",
                )
            access = roles.access_of(request.method or "GET")
            if not console.allows(resource, access):
                if access == roles.WRITE:
                    record_denied_write(
                        tenant=tenant,
                        actor=console.actor,
                        resource=resource,
                        path=request.path,
                        role=console.role,
                        source=console.source,
                        via="web",
                    )
                return error_page(
                    request,
                    403,
                    "Not allowed",
                    f"Your role ({console.role}) may not {access} {resource.replace('_', ' ')}.",
                )
            request.console = console  # type: ignore[attr-defined]
            try:
                with tenant_schema(tenant):
                    return view(request, console, *args, **kwargs)
            except Http404:
                return not_found(request)

        page.permission_resource = resource  # type: ignore[attr-defined]
        return page

    return decorate


def current_operator(request: HttpRequest) -> Operator | None:
    operator_id = request.session.get(OPERATOR_SESSION_KEY)
    if not operator_id:
        return None
    connection.set_schema_to_public()
    return Operator.objects.filter(pk=operator_id, is_active=True).first()


def operator_page(view: View) -> View:
    """An operator dashboard page: an operator's session only."""

    @functools.wraps(view)
    def page(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        operator = current_operator(request)
        if operator is None:
            return redirect_to_login(request.get_full_path(), "/operator/login")
        request.operator = operator  # type: ignore[attr-defined]
        try:
            return view(request, operator, *args, **kwargs)
        except Http404:
            return not_found(request)

    return page
