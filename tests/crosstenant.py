"""The cross-tenant check every tenant API test uses: another tenant sees a plain 404."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient


def assert_not_visible_to(
    other: APIClient, method: str, path: str, body: dict[str, Any] | None = None
) -> None:
    """`other` (a client with another tenant's token) gets 404 `not_found`, as for a missing id."""
    response = getattr(other, method.lower())(path, body, format="json")
    assert response.status_code == 404, (
        f"{method} {path} by another tenant answered {response.status_code}: {response.content!r}"
    )
    assert response.json()["code"] == "not_found"


def assert_answers_as_missing(
    other: APIClient,
    method: str,
    path: str,
    missing_path: str,
    body: dict[str, Any] | None = None,
    *,
    mask: tuple[str, ...] = (),
) -> None:
    """`other` gets for `path` exactly the answer it gets for a `missing_path` (an id that exists
    nowhere): nothing tells "not yours" from "not found". The ids in `mask` are blanked."""

    def answer(target: str) -> tuple[int, str]:
        response = getattr(other, method.lower())(target, body, format="json")
        text = response.content.decode(errors="replace")
        for value in mask:
            text = text.replace(value, "<id>")
        return response.status_code, text

    assert answer(path) == answer(missing_path)


def tenant_rows(handle: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of every tenant-schema model in the handle's schema, plus its audit trail,
    its API tokens (but when each was last used), members and invitations.

    Compare two of these to prove that nothing of the tenant changed (read in its own schema).
    One SQL statement (each table's rows as JSON, in a stable order): the attack matrices read
    this before and after each of ~1,000 attempts, and ~25 ORM queries a read cost ~30 s of a
    suite run.
    """
    from django.apps import apps
    from django.conf import settings
    from django.db import connection

    from tenants.models import ApiToken, AuditEvent, Invitation, Membership

    def rows_of(source: str, columns: str = "t", order: str = "") -> str:
        order = order or f"row_to_json({columns})::text"
        return (
            f"(SELECT coalesce(json_agg(row_to_json({columns}) ORDER BY {order}), '[]'::json) "
            f"FROM {source})"
        )

    def public(model: Any) -> str:
        return f'public."{model._meta.db_table}"'

    selects: dict[str, str] = {}
    for label in settings.TENANT_APPS:
        if label in settings.SHARED_APPS:
            continue
        for model in apps.get_app_config(label.rsplit(".", 1)[-1]).get_models():
            selects[model._meta.label] = rows_of(f'"{model._meta.db_table}" t')
    tenant = "WHERE t.tenant_id = %(tenant)s"
    # The trail in the order it was written: a test reads what an attempt added at its end.
    selects["tenants.AuditEvent"] = rows_of(f"{public(AuditEvent)} t {tenant}", order="t.id")
    token_columns = "id, name, role, spiffe_id_prefix, expires_at, revoked_at, token_hash"
    selects["tenants.ApiToken"] = rows_of(
        f"(SELECT {token_columns} FROM {public(ApiToken)} t {tenant}) c", "c"
    )
    selects["tenants.Membership"] = rows_of(f"{public(Membership)} t {tenant}")
    selects["tenants.Invitation"] = rows_of(f"{public(Invitation)} t {tenant}")
    pairs = ", ".join(f"'{label}', {select}" for label, select in selects.items())
    with handle.schema(), connection.cursor() as cursor:
        cursor.execute(f"SELECT json_build_object({pairs})", {"tenant": handle.tenant.id})  # noqa: S608 - names from the models
        (rows,) = cursor.fetchone()  # psycopg loads `json` (Django keeps only jsonb as text)
    return dict(rows)


def identifying_values(rows: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Values that only the tenant's own objects carry: ids, key ids, serials, fingerprints."""
    wanted = ("id", "key_id", "serial", "new_serial", "token_hash")
    values: set[str] = set()
    for label, table in rows.items():
        if label == "tenants.AuditEvent":
            continue
        for row in table:
            for name, value in row.items():
                if (name in wanted or name.endswith("_id")) and value not in (None, ""):
                    text = str(value)
                    if len(text) >= 8:  # small integers would match anything
                        values.add(text)
    return values
