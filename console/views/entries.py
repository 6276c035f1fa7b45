"""Registration entries: search and filter, create and edit (the API's checks), delete."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from console.access import Console, tenant_page
from console.views.common import field_of, lines, page
from hallmark.errors import HallmarkError
from issuance import services
from issuance.api.serializers import EntryInputSerializer
from issuance.models import Entry

PAGE_SIZE = 50


def _filtered(request: HttpRequest) -> tuple[QuerySet[Entry], dict[str, str]]:
    filters = {name: request.GET.get(name, "").strip() for name in ("q", "parent", "selector")}
    entries = Entry.objects.order_by("spiffe_id", "id")
    if filters["q"]:
        entries = entries.filter(spiffe_id__icontains=filters["q"])
    if filters["parent"]:
        entries = entries.filter(parent_id__icontains=filters["parent"])
    if filters["selector"]:
        selector = filters["selector"]
        # An exact `type:value` selector, or any selector containing the text.
        entries = entries.filter(
            Q(selectors__contains=[selector]) | Q(selectors__icontains=selector)
        )
    return entries, filters


@tenant_page("entries")
def entry_list(request: HttpRequest, console: Console) -> HttpResponse:
    entries, filters = _filtered(request)
    try:
        number = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        number = 1
    window = list(entries[(number - 1) * PAGE_SIZE : number * PAGE_SIZE + 1])
    context = {
        "entries": window[:PAGE_SIZE],
        "filters": filters,
        "page_number": number,
        "has_next": len(window) > PAGE_SIZE,
        "total": entries.count(),
    }
    template = "console/entries.html"
    if request.headers.get("HX-Request") == "true" and request.headers.get("HX-Target"):
        template = "console/entries_table.html"  # htmx: just the table, the filter stays
    return page(request, console, template, context, section="entries")


def _entry(entry_id: uuid.UUID) -> Entry:
    entry = Entry.objects.filter(pk=entry_id).first()
    if entry is None:  # another tenant's entry is not in this schema: the same 404
        raise Http404
    return entry


def _payload(form: Any) -> dict[str, Any]:
    """The form as the API's JSON body, so the API's serializer checks it."""
    payload: dict[str, Any] = {
        "spiffe_id": form.get("spiffe_id", "").strip(),
        "parent_id": form.get("parent_id", "").strip(),
        "selectors": lines(form.get("selectors", "")),
        "dns_names": lines(form.get("dns_names", "")),
        "federates_with": lines(form.get("federates_with", "")),
        "hint": form.get("hint", "").strip(),
        "admin": form.get("admin") == "on",
        "downstream": form.get("downstream") == "on",
        "expires_at": form.get("expires_at", "").strip() or None,
    }
    for ttl in ("x509_svid_ttl", "jwt_svid_ttl"):
        text = form.get(ttl, "").strip()
        payload[ttl] = text or None
    return payload


def _form_values(entry: Entry | None) -> dict[str, Any]:
    if entry is None:
        return {"selectors": "", "dns_names": "", "federates_with": ""}
    return {
        "spiffe_id": entry.spiffe_id,
        "parent_id": entry.parent_id,
        "selectors": "\n".join(entry.selectors),
        "x509_svid_ttl": entry.x509_svid_ttl,
        "jwt_svid_ttl": entry.jwt_svid_ttl,
        "dns_names": "\n".join(entry.dns_names),
        "hint": entry.hint,
        "federates_with": "\n".join(entry.federates_with),
        "admin": entry.admin,
        "downstream": entry.downstream,
        "expires_at": entry.expires_at.isoformat() if entry.expires_at else "",
    }


def _save(console: Console, entry: Entry | None, payload: dict[str, Any]) -> dict[str, str]:
    """Create or update through the issuance services; the errors by field ("" for the form)."""
    body = EntryInputSerializer(data=payload, partial=entry is not None)
    if not body.is_valid():
        return {
            (name if name != "non_field_errors" else ""): " ".join(str(m) for m in messages)
            for name, messages in body.errors.items()
        }
    try:
        if entry is None:
            services.create_entry(
                tenant=console.tenant,
                actor=console.actor,
                fields=body.validated_data,
                source=console.source,
            )
        else:
            services.update_entry(
                tenant=console.tenant,
                actor=console.actor,
                entry_id=entry.pk,
                changes=body.validated_data,
                source=console.source,
            )
    except HallmarkError as refused:
        return {field_of(refused.detail, refused.code): f"{refused.detail} ({refused.code})"}
    except ObjectDoesNotExist:
        raise Http404 from None
    return {}


def _edit(request: HttpRequest, console: Console, entry: Entry | None) -> HttpResponse:
    values = _form_values(entry)
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        values = {**request.POST.dict(), "admin": "admin" in request.POST}
        values["downstream"] = "downstream" in request.POST
        errors = _save(console, entry, _payload(request.POST))
        if not errors:
            return redirect("console:entries", slug=console.tenant.slug)
        status = 400
    context = {"entry": entry, "values": values, "errors": errors, "form_error": errors.get("")}
    return page(
        request, console, "console/entry_form.html", context, section="entries", status=status
    )


@tenant_page("entries")
def entry_create(request: HttpRequest, console: Console) -> HttpResponse:
    return _edit(request, console, None)


@tenant_page("entries")
def entry_edit(request: HttpRequest, console: Console, entry_id: uuid.UUID) -> HttpResponse:
    return _edit(request, console, _entry(entry_id))


@tenant_page("entries")
def entry_delete(request: HttpRequest, console: Console, entry_id: uuid.UUID) -> HttpResponse:
    """GET asks for confirmation; POST deletes."""
    entry = _entry(entry_id)
    if request.method == "POST":
        try:
            services.delete_entry(
                tenant=console.tenant,
                actor=console.actor,
                entry_id=entry.pk,
                source=console.source,
            )
        except ObjectDoesNotExist:
            raise Http404 from None
        return redirect("console:entries", slug=console.tenant.slug)
    return page(request, console, "console/entry_delete.html", {"entry": entry}, section="entries")
