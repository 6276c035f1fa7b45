"""A registrar token with a SPIFFE-ID prefix writes only entries under it, single and batch."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tenants.models import AuditEvent
from tests.conftest import TenantHandle

pytestmark = pytest.mark.django_db


def _registrar(handle: TenantHandle, prefix: str) -> APIClient:
    made = handle.client.post(
        "/api/v1/api-tokens",
        {"name": "payments-ci", "role": "registrar", "spiffe_id_prefix": prefix},
        format="json",
    )
    assert made.status_code == 201, made.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {made.json()['token']}")
    return client


def _entry(td: str, path: str) -> dict:
    return {
        "spiffe_id": f"spiffe://{td}{path}",
        "parent_id": f"spiffe://{td}/spire/agent/join_token/node",
        "selectors": ["unix:uid:1000"],
    }


def _codes(answer) -> list[str]:  # type: ignore[no-untyped-def]
    assert answer.status_code == 200, answer.content
    return [r["status"]["code"] for r in answer.json()["results"]]


def test_registrar_writes_entries_under_its_prefix_only(tenant_a: TenantHandle) -> None:
    td = tenant_a.trust_domain
    registrar = _registrar(tenant_a, f"spiffe://{td}/payments/")
    outside = tenant_a.client.post("/api/v1/entries", _entry(td, "/billing/api"), format="json")
    assert outside.status_code == 201

    inside = registrar.post("/api/v1/entries", _entry(td, "/payments/api"), format="json")
    refused = registrar.post("/api/v1/entries", _entry(td, "/payments-evil"), format="json")
    moved = registrar.patch(
        f"/api/v1/entries/{inside.json()['id']}",
        {"spiffe_id": f"spiffe://{td}/billing/x"},
        format="json",
    )
    changed_outside = registrar.patch(
        f"/api/v1/entries/{outside.json()['id']}", {"hint": "mine"}, format="json"
    )
    deleted_outside = registrar.delete(f"/api/v1/entries/{outside.json()['id']}")

    assert inside.status_code == 201
    for answer in (refused, moved, changed_outside, deleted_outside):
        assert answer.status_code == 403, answer.content
        assert answer.json()["code"] == "permission_denied"
    assert tenant_a.client.get(f"/api/v1/entries/{outside.json()['id']}").json()["hint"] == ""
    assert registrar.delete(f"/api/v1/entries/{inside.json()['id']}").status_code == 204
    denied = AuditEvent.objects.filter(tenant=tenant_a.tenant, outcome="denied")
    assert denied.filter(action="entry.create").count() == 1
    assert denied.filter(action="entry.delete", target=outside.json()["id"]).count() == 1


def test_registrar_batch_items_outside_the_prefix_fail_alone(tenant_a: TenantHandle) -> None:
    td = tenant_a.trust_domain
    registrar = _registrar(tenant_a, f"spiffe://{td}/payments")
    outside = tenant_a.client.post("/api/v1/entries", _entry(td, "/billing/api"), format="json")
    outside_id = outside.json()["id"]

    created = registrar.post(
        "/api/v1/entries/batch-create",
        {"entries": [_entry(td, "/payments/a"), _entry(td, "/billing/b")]},
        format="json",
    )
    inside_id = created.json()["results"][0]["entry"]["id"]
    updated = registrar.post(
        "/api/v1/entries/batch-update",
        {
            "entries": [
                {"id": inside_id, "hint": "ok"},
                {"id": outside_id, "hint": "mine"},
                {"id": inside_id, "spiffe_id": f"spiffe://{td}/billing/moved"},
            ]
        },
        format="json",
    )
    deleted = registrar.post(
        "/api/v1/entries/batch-delete", {"ids": [outside_id, inside_id]}, format="json"
    )

    assert _codes(created) == ["ok", "permission_denied"]
    assert _codes(updated) == ["ok", "permission_denied", "permission_denied"]
    assert _codes(deleted) == ["permission_denied", "ok"]
    assert tenant_a.client.get(f"/api/v1/entries/{outside_id}").json()["hint"] == ""
    assert (
        AuditEvent.objects.filter(
            tenant=tenant_a.tenant, outcome="denied", detail__code="permission_denied"
        ).count()
        == 4
    )


def test_registrar_join_token_alias_must_be_under_the_prefix(tenant_a: TenantHandle) -> None:
    td = tenant_a.trust_domain
    registrar = _registrar(tenant_a, f"spiffe://{td}/payments/")

    plain = registrar.post("/api/v1/join-tokens", {"ttl": 600}, format="json")
    aliased = registrar.post(
        "/api/v1/join-tokens",
        {"ttl": 600, "spiffe_id": f"spiffe://{td}/payments/node"},
        format="json",
    )
    elsewhere = registrar.post(
        "/api/v1/join-tokens",
        {"ttl": 600, "spiffe_id": f"spiffe://{td}/billing/node"},
        format="json",
    )

    assert plain.status_code == 201 and aliased.status_code == 201
    assert elsewhere.status_code == 403 and elsewhere.json()["code"] == "permission_denied"


def test_a_prefix_is_of_the_tenant_own_trust_domain(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    answer = tenant_a.client.post(
        "/api/v1/api-tokens",
        {
            "name": "x",
            "role": "registrar",
            "spiffe_id_prefix": f"spiffe://{tenant_b.trust_domain}/payments/",
        },
        format="json",
    )
    registrar = _registrar(tenant_a, f"spiffe://{tenant_a.trust_domain}/payments/")
    into_b = registrar.post(
        "/api/v1/entries", _entry(tenant_b.trust_domain, "/payments/x"), format="json"
    )

    assert answer.status_code == 400
    assert answer.json()["code"] == "spiffe_id_outside_trust_domain"
    # A's registrar naming B's trust domain is refused by the prefix first (403), never stored.
    assert into_b.status_code in (400, 403)
    with tenant_b.schema():
        from issuance.models import Entry

        assert not Entry.objects.exists()
