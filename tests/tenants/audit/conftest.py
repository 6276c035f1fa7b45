"""Helpers for the audit-trail tests: raw SQL on the trail, as an intruder would write it."""

from __future__ import annotations

from typing import Any

from django.db import connection


def sql(statement: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def chain_ids(tenant: Any) -> list[int]:
    """The tenant's event ids in sequence order."""
    from tenants.models import AuditEvent

    return list(
        AuditEvent.objects.filter(tenant=tenant).order_by("sequence").values_list("id", flat=True)
    )
