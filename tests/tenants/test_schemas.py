"""A tenant schema copied from the template is the schema migrations would have built."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command
from django.db import connection

from tenants import schemas

pytestmark = pytest.mark.django_db(transaction=True)


def _catalog(schema: str) -> dict[str, list[tuple[object, ...]]]:
    """Everything about a schema's structure that migrations and queries depend on."""
    queries = {
        "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default, "
        "is_identity, identity_generation, character_maximum_length, "
        # the order of the columns, not their numbers (a migrated table keeps dropped ones)
        "row_number() OVER (PARTITION BY table_name ORDER BY ordinal_position) "
        "FROM information_schema.columns WHERE table_schema = %s",
        "constraints": "SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid), "
        "k.condeferrable, k.condeferred FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s",
        "migrations": "SELECT app, name FROM {schema}.django_migrations",
        "content_types": "SELECT app_label, model FROM {schema}.django_content_type",
    }
    found: dict[str, list[tuple[object, ...]]] = {}
    with connection.cursor() as cursor:
        for key, query in queries.items():
            cursor.execute(query.format(schema=f'"{schema}"'), [schema] if "%s" in query else [])
            rows = [
                tuple(str(v).replace(f"{schema}.", "SCHEMA.") for v in row)
                for row in cursor.fetchall()
            ]
            found[key] = sorted(rows)
    return found


def _drop(*names: str) -> None:
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_a_copied_schema_equals_a_migrated_one_down_to_constraint_and_index_names() -> None:
    # given a schema built the slow way, by running every tenant migration
    migrated, copied = f"t_{uuid.uuid4().hex}", f"t_{uuid.uuid4().hex}"
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{migrated}"')
        call_command("migrate_schemas", schema_name=migrated, interactive=False, verbosity=0)
        connection.set_schema_to_public()

        # when another is copied from the template
        schemas.create_tenant_schema(copied)

        # then both have the same columns, constraints, indexes, history and content types
        expected, actual = _catalog(migrated), _catalog(copied)
        assert expected["columns"] and expected["migrations"] and expected["indexes"]
        for key in expected:
            assert actual[key] == expected[key], key
    finally:
        connection.set_schema_to_public()
        _drop(migrated, copied)


def test_a_copied_schema_takes_new_rows_with_fresh_ids_and_keeps_its_foreign_keys(
    tenant_a,
) -> None:
    # given a tenant whose schema was copied at signup
    from django.contrib.contenttypes.models import ContentType
    from django.db import IntegrityError, transaction
    from django.utils import timezone

    from issuance.models import JoinToken

    with tenant_a.schema():
        # when a row is added to a table whose rows were copied from the template
        copied_ids = set(ContentType.objects.values_list("id", flat=True))
        ContentType.objects.create(app_label="hallmark_test", model="fresh")
        fresh = ContentType.objects.get(app_label="hallmark_test", model="fresh")
        # then its id comes after the copied ones (the identity moved on)
        assert fresh.id > max(copied_ids)

    # and a foreign key of the copy refuses a row that points nowhere (checked at commit:
    # Django's foreign keys are deferred)
    with pytest.raises(IntegrityError), tenant_a.schema(), transaction.atomic():
        JoinToken.objects.create(
            token_hash="0" * 64, expires_at=timezone.now(), agent_id=uuid.uuid4()
        )
    with tenant_a.schema():
        assert not JoinToken.objects.filter(token_hash="0" * 64).exists()


def test_an_invalid_schema_name_is_refused_before_any_sql() -> None:
    with pytest.raises(ValueError, match="not a tenant schema name"):
        schemas.create_tenant_schema('t_x"; DROP SCHEMA public; --')


def test_a_template_holding_what_a_copy_would_miss_fails_loudly() -> None:
    # given a view in the template (a future migration might add one)
    with connection.cursor() as cursor:
        cursor.execute(
            f'CREATE VIEW "{schemas.TEMPLATE_SCHEMA}".hallmark_test_view AS SELECT 1 AS one'
        )
    schemas._script = None  # as after a migration of the template
    try:
        # when a schema is copied, then the copy refuses rather than silently dropping it
        with pytest.raises(schemas.TemplateSchemaError, match="hallmark_test_view"):
            schemas.create_tenant_schema(f"t_{uuid.uuid4().hex}")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP VIEW "{schemas.TEMPLATE_SCHEMA}".hallmark_test_view')
        schemas._script = None
