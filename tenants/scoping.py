"""The one place that moves the database connection between the public and tenant schemas."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context

from tenants.models import Tenant


class NotInTenantSchema(RuntimeError):
    """Tenant data was touched while the connection was in the public schema."""


@contextlib.contextmanager
def tenant_schema(tenant: Tenant) -> Iterator[Tenant]:
    """Run the block in the tenant's schema, restoring the previous schema afterwards."""
    previous = getattr(connection, "tenant", None)
    connection.set_tenant(tenant)
    try:
        yield tenant
    finally:
        if (
            previous is not None
            and getattr(previous, "schema_name", None) != get_public_schema_name()
        ):
            connection.set_tenant(previous)
        else:
            connection.set_schema_to_public()


@contextlib.contextmanager
def public_schema() -> Iterator[None]:
    with schema_context(get_public_schema_name()):
        yield


def current_tenant() -> Tenant:
    tenant = getattr(connection, "tenant", None)
    if not isinstance(tenant, Tenant) or tenant.schema_name == get_public_schema_name():
        raise NotInTenantSchema(
            "tenant data accessed from the public schema; wrap the call in tenant_schema(tenant)"
        )
    return tenant


def get_tenant_by_trust_domain(name: str) -> Tenant | None:
    with public_schema():
        return Tenant.objects.filter(trust_domain=name).first()


def get_tenant(tenant_id: object) -> Tenant:
    with public_schema():
        return Tenant.objects.get(pk=tenant_id)


class TenantRequired(ValueError):
    """A tenant task was dispatched without a tenant; it refuses to run in the public schema."""


def all_tenant_ids() -> list[object]:
    """Every tenant's id (not the public schema's): what periodic sweeps fan out over."""
    with public_schema():
        return list(
            Tenant.objects.exclude(schema_name=get_public_schema_name()).values_list(
                "id", flat=True
            )
        )


def all_tenants() -> list[Tenant]:
    """Every tenant (not the public schema), read in one query, for sweeps that visit each."""
    with public_schema():
        return list(Tenant.objects.exclude(schema_name=get_public_schema_name()))


def tenant_for_task(tenant_id: object, task: str) -> Tenant | None:
    """The tenant a Celery task must run for; None if it was deleted since it was queued.

    A task without a tenant, or pointed at the public schema, fails loudly instead of quietly
    running in `public` (django-tenants' Celery integration would fall back to it).
    """
    if not tenant_id:
        raise TenantRequired(f"{task} needs a tenant id; refusing to run")
    try:
        tenant = get_tenant(tenant_id)
    except Tenant.DoesNotExist:
        return None
    if tenant.schema_name == get_public_schema_name():
        raise TenantRequired(f"{task} was given the public schema; refusing to run")
    return tenant
