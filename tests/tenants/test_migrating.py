"""`hallmark migrate` migrates only the tenant schemas that are behind, and names failures."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

from tenants.migrating import SchemasFailedToMigrate, code_fingerprint, migrate_tenant_schemas
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)
LAST = ("trustdomains", "0004_upstream_authority")
BEFORE_LAST = "0003_journal_pruning_one_prepared"


def roll_back_last_migration(handle) -> None:
    call_command(
        "migrate_schemas",
        LAST[0],
        BEFORE_LAST,
        schema_name=handle.tenant.schema_name,
        interactive=False,
        verbosity=0,
    )
    connection.set_schema_to_public()


def has_last_migration(handle) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT 1 FROM "{handle.tenant.schema_name}".django_migrations '
            "WHERE app = %s AND name = %s",
            list(LAST),
        )
        return cursor.fetchone() is not None


def recorded(handle) -> str:
    return Tenant.objects.get(id=handle.tenant.id).migrated_to


def test_signup_records_the_codes_fingerprint(tenant_a) -> None:
    assert recorded(tenant_a) == code_fingerprint()
    assert has_last_migration(tenant_a)


def test_only_schemas_recorded_as_behind_are_migrated(tenant_a, tenant_b) -> None:
    # given two schemas that both lack the last migration, only one of them recorded as behind
    for handle in (tenant_a, tenant_b):
        roll_back_last_migration(handle)
    Tenant.objects.filter(id=tenant_a.tenant.id).update(migrated_to="")
    try:
        # when the tenant schemas are migrated
        run = migrate_tenant_schemas()

        # then the one recorded as behind was migrated and recorded; the other left alone
        assert tenant_a.tenant.slug in run.migrated
        assert tenant_b.tenant.slug not in run.migrated
        assert has_last_migration(tenant_a) and recorded(tenant_a) == code_fingerprint()
        assert not has_last_migration(tenant_b)
    finally:
        call_command(
            "migrate_schemas",
            schema_name=tenant_b.tenant.schema_name,
            interactive=False,
            verbosity=0,
        )
        connection.set_schema_to_public()


def test_a_schema_that_cannot_migrate_is_named_and_the_others_still_are(tenant_a, tenant_b) -> None:
    # given one schema behind and another behind whose schema is gone
    roll_back_last_migration(tenant_a)
    Tenant.objects.filter(id=tenant_a.tenant.id).update(migrated_to="")
    Tenant.objects.filter(id=tenant_b.tenant.id).update(migrated_to="")
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA "{tenant_b.tenant.schema_name}" CASCADE')

    # when the tenant schemas are migrated
    with pytest.raises(SchemasFailedToMigrate) as failure:
        migrate_tenant_schemas()

    # then the failure names the broken tenant and says what to do; the other was migrated
    assert tenant_b.tenant.slug in str(failure.value)
    assert "hallmark migrate" in str(failure.value)
    assert tenant_a.tenant.slug in failure.value.run.migrated
    assert tenant_b.tenant.slug in failure.value.run.failed
    assert has_last_migration(tenant_a) and recorded(tenant_a) == code_fingerprint()
    assert recorded(tenant_b) == ""  # still behind: the next run tries it again
