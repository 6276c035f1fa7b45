"""Rendering helpers shared by the tenant pages."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from console.access import Console
from issuance.services.entries import ENTRY_FIELDS

# Where a service's message names a field, the error is shown beside that field.
CODE_FIELDS = {
    "invalid_selector": "selectors",
    "invalid_dns_name": "dns_names",
    "dns_name_not_allowed": "dns_names",
    "entry_exists": "spiffe_id",
    "invalid_expiry": "expires_at",
}


def page(
    request: HttpRequest,
    console: Console,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    section: str,
    status: int = 200,
) -> HttpResponse:
    """A tenant page with the console's frame: the tenant, the role, what it may do."""
    return render(
        request,
        template,
        {
            "console": console,
            "tenant": console.tenant,
            "can": console.can,
            "section": section,
            **(context or {}),
        },
        status=status,
    )


def field_of(detail: str, code: str, fields: tuple[str, ...] = ENTRY_FIELDS) -> str:
    """The form field a service error is about ("" for the form as a whole)."""
    for name in sorted(fields, key=len, reverse=True):
        if detail.startswith(name):
            return name
    return CODE_FIELDS.get(code, "")


def lines(text: str) -> list[str]:
    """A textarea's non-empty lines (commas also separate), stripped."""
    return [part.strip() for line in text.splitlines() for part in line.split(",") if part.strip()]
