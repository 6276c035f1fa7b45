"""Gauges: what each tenant holds (agents, entries, relationships), sampled once an hour or more.

`tenants` imports no tenant app, so the apps that own the rows say how to count them: the
setting METERING_GAUGES names functions (dotted paths) that run in a tenant's schema and
answer `{gauge: count}` for the gauges of GaugeSample. A sample is an upsert on (tenant, UTC
hour), so sampling twice in an hour is harmless; agents keep the hour's highest count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.conf import settings
from django.db import connection, transaction
from django.utils.module_loading import import_string

from tenants.metering.models import GaugeSample
from tenants.models import Tenant
from tenants.scoping import all_tenant_ids, tenant_schema

GAUGES = ("agents_active", "entries", "federation_relationships")


def providers() -> list[Callable[[], dict[str, int]]]:
    return [import_string(path) for path in getattr(settings, "METERING_GAUGES", [])]


def read_gauges(tenant: Tenant) -> dict[str, int]:
    """The tenant's gauges now, read in its schema."""
    values = dict.fromkeys(GAUGES, 0)
    with tenant_schema(tenant):
        for provider in providers():
            values.update({k: int(v) for k, v in provider().items() if k in values})
    return values


def sample(tenant: Tenant, *, at: dt.datetime | None = None) -> dict[str, int]:
    """Store the tenant's gauges for the hour of `at` (now)."""
    values = read_gauges(tenant)
    hour = (at or dt.datetime.now(tz=dt.UTC)).replace(minute=0, second=0, microsecond=0)
    connection.set_schema_to_public()
    table = GaugeSample._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (tenant_id, hour, agents_active, entries, "  # noqa: S608
            "federation_relationships) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant_id, hour) DO UPDATE SET "
            f"agents_active = GREATEST({table}.agents_active, EXCLUDED.agents_active), "
            "entries = EXCLUDED.entries, "
            "federation_relationships = EXCLUDED.federation_relationships",
            [
                tenant.pk,
                hour,
                values["agents_active"],
                values["entries"],
                values["federation_relationships"],
            ],
        )
    return values


def sample_all() -> int:
    """Sample every tenant; the number sampled."""
    done = 0
    for tenant_id in all_tenant_ids():
        tenant = Tenant.objects.filter(pk=tenant_id).first()
        if tenant is None:
            continue
        sample(tenant)
        done += 1
    return done
