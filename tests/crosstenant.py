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
    """Every row of every tenant-schema model in the handle's schema, plus its audit trail.

    Compare two of these to prove that nothing of the tenant changed (read in its own schema).
    """
    from django.apps import apps
    from django.conf import settings

    from tenants.models import AuditEvent
    from tenants.scoping import public_schema

    rows: dict[str, list[dict[str, Any]]] = {}
    with handle.schema():
        for label in settings.TENANT_APPS:
            config = apps.get_app_config(label.rsplit(".", 1)[-1])
            if label in settings.SHARED_APPS:
                continue
            for model in config.get_models():
                rows[model._meta.label] = sorted(
                    (_plain(row) for row in model._default_manager.values()), key=repr
                )
    with public_schema():
        rows["tenants.AuditEvent"] = list(
            AuditEvent.objects.filter(tenant=handle.tenant).order_by("id").values()
        )
        rows.update(_people_rows(handle.tenant))
    return rows


def _people_rows(tenant: Any) -> dict[str, list[dict[str, Any]]]:
    """The tenant's API tokens (but when each was last used), members and invitations."""
    from tenants.models import ApiToken, Invitation, Membership

    return {
        "tenants.ApiToken": list(
            ApiToken.objects.filter(tenant=tenant)
            .order_by("id")
            .values(
                "id", "name", "role", "spiffe_id_prefix", "expires_at", "revoked_at", "token_hash"
            )
        ),
        "tenants.Membership": list(
            Membership.objects.filter(tenant=tenant).order_by("id").values()
        ),
        "tenants.Invitation": list(
            Invitation.objects.filter(tenant=tenant).order_by("id").values()
        ),
    }


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}


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
