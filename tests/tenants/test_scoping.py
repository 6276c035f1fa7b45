"""The scoping helpers move the connection between schemas and refuse tenant-less work.

Two real tenants (separate PostgreSQL schemas); every helper is checked for picking the right
one and for failing loudly where it would otherwise fall back to the public schema.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction
from rest_framework.test import APIRequestFactory

from tenants.api.base import TenantResourceViewSet
from tenants.models import ApiToken, AuditEvent, Tenant
from tenants.scoping import (
    NotInTenantSchema,
    TenantRequired,
    all_tenant_ids,
    current_tenant,
    get_tenant,
    get_tenant_by_trust_domain,
    public_schema,
    tenant_for_task,
    tenant_schema,
)
from tests.conftest import TenantHandle
from tests.crosstenant import assert_not_visible_to

pytestmark = pytest.mark.django_db(transaction=True)


def test_tenant_schema_moves_into_the_tenant_and_back_to_public(tenant_a: TenantHandle) -> None:
    connection.set_schema_to_public()
    with tenant_schema(tenant_a.tenant):
        assert connection.schema_name == tenant_a.tenant.schema_name
        assert current_tenant() == tenant_a.tenant
    assert connection.schema_name == "public"


def test_nested_tenant_schemas_restore_the_outer_tenant(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    with tenant_schema(tenant_a.tenant):
        with tenant_schema(tenant_b.tenant):
            assert current_tenant() == tenant_b.tenant
        assert connection.schema_name == tenant_a.tenant.schema_name
        assert current_tenant() == tenant_a.tenant


def test_tenant_schema_returns_to_public_even_when_the_block_fails(
    tenant_a: TenantHandle,
) -> None:
    connection.set_schema_to_public()
    with pytest.raises(RuntimeError), tenant_schema(tenant_a.tenant):
        raise RuntimeError("boom")
    assert connection.schema_name == "public"


def test_current_tenant_refuses_the_public_schema() -> None:
    connection.set_schema_to_public()
    with pytest.raises(NotInTenantSchema):
        current_tenant()


def test_public_schema_block_returns_to_the_tenant(tenant_a: TenantHandle) -> None:
    with tenant_schema(tenant_a.tenant):
        with public_schema():
            assert connection.schema_name == "public"
        assert current_tenant() == tenant_a.tenant


def test_a_trust_domain_names_its_own_tenant_and_no_other(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    # asked from inside tenant B's schema, the lookup still reads the public tenant table
    with tenant_schema(tenant_b.tenant):
        assert get_tenant_by_trust_domain(tenant_a.trust_domain) == tenant_a.tenant
        assert current_tenant() == tenant_b.tenant
    assert get_tenant_by_trust_domain(tenant_b.trust_domain) == tenant_b.tenant
    assert get_tenant_by_trust_domain("unknown.test") is None
    assert get_tenant(tenant_a.tenant.pk) == tenant_a.tenant


def test_periodic_sweeps_fan_out_over_every_tenant_but_public(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    public = Tenant.objects.create(
        schema_name="public", slug=f"public-{uuid.uuid4().hex[:6]}", name="p", trust_domain="p.x"
    )
    ids = all_tenant_ids()
    assert {tenant_a.tenant.pk, tenant_b.tenant.pk} <= set(ids)
    assert public.pk not in ids


@pytest.mark.parametrize("tenant_id", [None, "", 0])
def test_a_task_without_a_tenant_refuses_to_run(tenant_id: object) -> None:
    with pytest.raises(TenantRequired, match="needs a tenant id"):
        tenant_for_task(tenant_id, "rotate_trust_domain")


def test_a_task_pointed_at_the_public_schema_refuses_to_run() -> None:
    public = Tenant.objects.create(
        schema_name="public", slug=f"public-{uuid.uuid4().hex[:6]}", name="p", trust_domain="p.x"
    )
    with pytest.raises(TenantRequired, match="public schema"):
        tenant_for_task(public.pk, "rotate_trust_domain")


def test_a_task_runs_for_its_own_tenant_and_skips_a_deleted_one(
    tenant_a: TenantHandle,
) -> None:
    assert tenant_for_task(tenant_a.tenant.pk, "rotate_trust_domain") == tenant_a.tenant
    assert tenant_for_task(uuid.uuid4(), "rotate_trust_domain") is None


def test_a_tenant_viewset_cannot_override_its_scoping() -> None:
    for attribute in ("get_queryset", "queryset"):
        with pytest.raises(TypeError, match="must not set queryset"):
            type("Leaky", (TenantResourceViewSet,), {attribute: lambda self: None})


def test_a_tenant_viewset_refuses_to_list_from_the_public_schema() -> None:
    class Tokens(TenantResourceViewSet):
        model = ApiToken

    view = Tokens()
    view.request = APIRequestFactory().get("/")
    connection.set_schema_to_public()
    with pytest.raises(NotInTenantSchema):
        view.get_queryset()


def test_current_tenant_refuses_a_tenant_row_that_names_the_public_schema() -> None:
    # a Tenant row for `public` (django-tenants keeps one in many setups) is no tenant
    public = Tenant.objects.create(
        schema_name="public", slug=f"public-{uuid.uuid4().hex[:6]}", name="p", trust_domain="p.x"
    )
    connection.set_tenant(public)
    with pytest.raises(NotInTenantSchema):
        current_tenant()


def test_a_tenant_resource_is_written_listed_and_read_only_by_its_tenant(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    # when tenant A registers an entry through a TenantResourceViewSet
    body = {
        "spiffe_id": f"spiffe://{tenant_a.trust_domain}/web",
        "parent_id": f"spiffe://{tenant_a.trust_domain}/spire/agent/join_token/node",
        "selectors": ["unix:uid:1000"],
    }
    created = tenant_a.client.post("/api/v1/entries", body, format="json")
    assert created.status_code == 201, created.content
    entry_id = created.json()["id"]

    # then A lists and reads it, B's list is empty and B's read is the plain 404
    assert [e["id"] for e in tenant_a.client.get("/api/v1/entries").json()] == [entry_id]
    assert tenant_a.client.get(f"/api/v1/entries/{entry_id}").status_code == 200
    assert tenant_b.client.get("/api/v1/entries").json() == []
    assert_not_visible_to(tenant_b.client, "GET", f"/api/v1/entries/{entry_id}")
    # and the audit row names A's token as the actor, in A's trail
    event = AuditEvent.objects.get(action="entry.create", target=entry_id)
    assert event.tenant_id == tenant_a.tenant.pk
    assert event.actor == f"token:{tenant_a.token[:9]}"


def _current_schema() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return str(cursor.fetchone()[0])


def test_the_search_path_is_set_once_per_schema_change_not_before_every_statement(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries, tenant_schema(tenant_a.tenant):
        schemas = [_current_schema() for _ in range(3)]
        with tenant_schema(tenant_b.tenant):
            schemas.append(_current_schema())
        schemas.append(_current_schema())

    sets = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SET search_path")]
    a, b = tenant_a.tenant.schema_name, tenant_b.tenant.schema_name
    assert schemas == [a, a, a, b, a]
    assert len(sets) == 3  # into A, into B, back into A: none repeated for the same schema


def test_a_rolled_back_transaction_does_not_leave_the_connection_in_the_previous_schema(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    # given a connection whose search path is A's (set outside any transaction)
    with tenant_schema(tenant_a.tenant):
        assert _current_schema() == tenant_a.tenant.schema_name
        connection.set_tenant(tenant_b.tenant)
        # when B's path is set inside a transaction that rolls back (PostgreSQL undoes the SET)
        with pytest.raises(RuntimeError), transaction.atomic():
            assert _current_schema() == tenant_b.tenant.schema_name
            raise RuntimeError("boom")
        # then the next statement still runs in B, not in A's schema the rollback restored
        assert _current_schema() == tenant_b.tenant.schema_name


def test_a_rolled_back_savepoint_does_not_leave_the_connection_in_the_previous_schema(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    with tenant_schema(tenant_a.tenant), transaction.atomic():
        assert _current_schema() == tenant_a.tenant.schema_name
        connection.set_tenant(tenant_b.tenant)
        with pytest.raises(RuntimeError), transaction.atomic():
            assert _current_schema() == tenant_b.tenant.schema_name
            raise RuntimeError("boom")
        assert _current_schema() == tenant_b.tenant.schema_name
