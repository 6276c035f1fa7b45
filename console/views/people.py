"""Members (invite, change role, remove) and API tokens (make, shown once; revoke)."""

from __future__ import annotations

import datetime as dt
import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.dateparse import parse_datetime

from console.access import Console, tenant_page
from console.views.common import page
from tenants import apitokens, members, roles
from tenants.api.errors import ApiError
from tenants.models import ApiToken
from tenants.services import revoke_api_token


def _members_page(
    request: HttpRequest,
    console: Console,
    *,
    invitation: str = "",
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "members": members.list_members(tenant=console.tenant),
        "roles": roles.ROLES,
        "invitation": invitation,
        "error": error,
    }
    return page(request, console, "console/members.html", context, section="members", status=status)


@tenant_page("members")
def member_list(request: HttpRequest, console: Console) -> HttpResponse:
    """GET lists the members; POST invites one (the invitation token is shown once)."""
    if request.method == "POST":
        try:
            made = members.invite(
                tenant=console.tenant,
                email=request.POST.get("email", ""),
                role=request.POST.get("role", ""),
                actor=console.actor,
                source=console.source,
            )
        except ApiError as refused:
            return _members_page(
                request, console, error=str(refused.detail), status=refused.status_code
            )
        return _members_page(request, console, invitation=made.token)
    return _members_page(request, console)


def _member_id(member_id: str) -> int:
    try:
        return int(member_id)
    except ValueError:
        raise Http404 from None


@tenant_page("members")
def member_change(request: HttpRequest, console: Console, member_id: str) -> HttpResponse:
    """POST `role=...` changes the role; POST `remove=1` removes the member."""
    if request.method != "POST":
        raise Http404
    try:
        if request.POST.get("remove"):
            members.remove_member(
                _member_id(member_id),
                tenant=console.tenant,
                actor=console.actor,
                source=console.source,
            )
        else:
            members.change_role(
                _member_id(member_id),
                tenant=console.tenant,
                role=request.POST.get("role", ""),
                actor=console.actor,
                source=console.source,
            )
    except ApiError as refused:
        if refused.status_code == 404:
            raise Http404 from None
        return _members_page(
            request, console, error=str(refused.detail), status=refused.status_code
        )
    return redirect("console:members", slug=console.tenant.slug)


def _tokens_page(
    request: HttpRequest, console: Console, *, secret: str = "", error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "tokens": apitokens.list_api_tokens(tenant=console.tenant),
        "roles": [r for r in roles.ROLES if roles.not_above(r, console.principal.grants)],
        "secret": secret,
        "error": error,
    }
    response = page(
        request, console, "console/api_tokens.html", context, section="api_tokens", status=status
    )
    if secret:
        response["Cache-Control"] = "no-store"
    return response


def _expiry(text: str) -> dt.datetime | None:
    if not text.strip():
        return None
    value = parse_datetime(text.strip())
    if value is None or value.tzinfo is None:
        raise ApiError("invalid_expiry", "expires_at must be a date-time with a time zone")
    return value


@tenant_page("api_tokens")
def api_tokens(request: HttpRequest, console: Console) -> HttpResponse:
    """GET lists the live tokens; POST makes one, never above the member's own role."""
    if request.method == "POST":
        try:
            secret, _ = apitokens.create_api_token(
                tenant=console.tenant,
                principal=console.principal,
                name=request.POST.get("name", "").strip()[:100] or "console",
                role=request.POST.get("role", ""),
                spiffe_id_prefix=request.POST.get("spiffe_id_prefix", "").strip(),
                expires_at=_expiry(request.POST.get("expires_at", "")),
                source=console.source,
            )
        except ApiError as refused:
            return _tokens_page(
                request, console, error=str(refused.detail), status=refused.status_code
            )
        return _tokens_page(request, console, secret=secret)
    return _tokens_page(request, console)


@tenant_page("api_tokens")
def api_token_revoke(request: HttpRequest, console: Console, token_id: uuid.UUID) -> HttpResponse:
    if request.method != "POST":
        raise Http404
    token = ApiToken.objects.filter(pk=token_id, tenant=console.tenant).first()
    if token is None:
        raise Http404
    revoke_api_token(token.pk, tenant=console.tenant, actor=console.actor)
    return redirect("console:api_tokens", slug=console.tenant.slug)
