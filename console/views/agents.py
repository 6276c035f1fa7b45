"""Agents (list, ban, evict) and join tokens (made here, the secret shown once)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone

from console.access import Console, tenant_page
from console.views.common import page
from hallmark.errors import HallmarkError
from issuance import services
from issuance.models import Agent, JoinToken


@tenant_page("agents")
def agent_list(request: HttpRequest, console: Console) -> HttpResponse:
    agents = Agent.objects.order_by("-created_at")[:500]
    return page(request, console, "console/agents.html", {"agents": agents}, section="agents")


def _agent(agent_id: uuid.UUID) -> Agent:
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None:
        raise Http404
    return agent


@tenant_page("agents")
def agent_ban(request: HttpRequest, console: Console, agent_id: uuid.UUID) -> HttpResponse:
    agent = _agent(agent_id)
    if request.method == "POST":
        try:
            services.ban_agent(
                tenant=console.tenant, actor=console.actor, agent_id=agent.pk, source=console.source
            )
        except ObjectDoesNotExist:
            raise Http404 from None
        return redirect("console:agents", slug=console.tenant.slug)
    context = {"agent": agent, "action": "ban"}
    return page(request, console, "console/agent_confirm.html", context, section="agents")


@tenant_page("agents")
def agent_evict(request: HttpRequest, console: Console, agent_id: uuid.UUID) -> HttpResponse:
    agent = _agent(agent_id)
    if request.method == "POST":
        try:
            services.evict_agent(
                tenant=console.tenant, actor=console.actor, agent_id=agent.pk, source=console.source
            )
        except ObjectDoesNotExist:
            raise Http404 from None
        return redirect("console:agents", slug=console.tenant.slug)
    context = {"agent": agent, "action": "evict"}
    return page(request, console, "console/agent_confirm.html", context, section="agents")


def _agent_command(console: Console, token: str) -> str:
    """The exact command that attests an agent with this token (shown with the token)."""
    public_url = settings.HTTP_PUBLIC_URL.rstrip("/")
    command = (
        f"hallmark-agent run --server {settings.AGENT_ENDPOINT} "
        f"--trust-domain {console.tenant.trust_domain} --join-token {token} "
        f"--socket /tmp/hallmark-agent/agent.sock --data-dir /var/lib/hallmark-agent "
        f"--trust-bundle-url {public_url}/bundle/{console.tenant.trust_domain}"
    )
    if public_url.startswith("http://"):  # the agent takes a plain-http bundle only so
        command += " --insecure-bootstrap"
    return command


@tenant_page("join_tokens")
def join_tokens(request: HttpRequest, console: Console) -> HttpResponse:
    """List the tokens (never their secrets); POST makes one and shows it this once."""
    created = None
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        ttl_text = request.POST.get("ttl", "").strip()
        spiffe_id = request.POST.get("spiffe_id", "").strip() or None
        try:
            ttl = int(ttl_text) if ttl_text else None
        except ValueError:
            errors["ttl"] = "ttl must be a whole number of seconds"
        if not errors:
            try:
                made = services.create_join_token(
                    tenant=console.tenant,
                    actor=console.actor,
                    ttl=ttl,
                    spiffe_id=spiffe_id,
                    source=console.source,
                )
            except HallmarkError as refused:
                name = "spiffe_id" if "spiffe" in refused.detail.lower() else "ttl"
                errors[name] = f"{refused.detail} ({refused.code})"
            else:
                created = {
                    "token": made.token,
                    "expires_at": made.join_token.expires_at,
                    "spiffe_id": made.join_token.spiffe_id,
                    "command": _agent_command(console, made.token),
                }
        if errors:
            status = 400
    tokens = JoinToken.objects.order_by("-created_at")[:200]
    context = {
        "tokens": tokens,
        "created": created,
        "errors": errors,
        "values": request.POST if errors else {},
        "now": timezone.now(),
    }
    response = page(
        request, console, "console/join_tokens.html", context, section="join_tokens", status=status
    )
    if created:
        response["Cache-Control"] = "no-store"  # the secret is not kept in any cache
    return response
