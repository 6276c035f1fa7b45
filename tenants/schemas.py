"""Tenant schemas, cloned from a migrated template instead of migrated one by one.

Migrating a new schema replays every tenant migration (over a second a signup, and growing with
each migration). Instead, one schema, `tenant_template`, is migrated like a tenant's and each
signup copies it: tables (columns, defaults, identity through `LIKE`), their constraints and
indexes under the template's names, its rows (the migration history and content types), then
its foreign keys. All of it is plain DDL in the signup's transaction, so a
failed signup leaves no schema behind.

The template is brought up to date by `hallmark migrate` / `hallmark up` and, once per process,
before the first clone (so a process that runs newer code never clones an older template).
Anything in the template the copy does not reproduce (views, functions, triggers, sequences
not owned by an identity column, a default that names the template) fails the clone loudly.
"""

from __future__ import annotations

import re
import threading

from django.core.management import call_command
from django.db import connection, transaction
from django_tenants.utils import schema_exists

TEMPLATE_SCHEMA = "tenant_template"
# Names that go into SQL as identifiers: ours (t_<uuid hex>) and the template's tables only.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_ADVISORY_LOCK = 0x48414C4D  # "HALM": one template migration at a time across processes
_checked = threading.Lock()
_template_current = False
SCHEMA_PLACEHOLDER = '"hallmark__new_tenant_schema__"'
_script: str | None = None


class TemplateSchemaError(RuntimeError):
    """The template holds something a clone would not reproduce faithfully."""


def migrate_template(*, verbosity: int = 0) -> None:
    """Create the template schema if needed and apply every tenant migration to it."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])
        if not schema_exists(TEMPLATE_SCHEMA):
            cursor.execute(f'CREATE SCHEMA "{TEMPLATE_SCHEMA}"')
        call_command(
            "migrate_schemas",
            tenant=True,
            schema_name=TEMPLATE_SCHEMA,
            interactive=False,
            verbosity=verbosity,
        )
        # Only a committed template counts: a rolled-back one is migrated again next time.
        transaction.on_commit(_mark_template_current)
    connection.set_schema_to_public()


def _mark_template_current() -> None:
    global _template_current, _script  # noqa: PLW0603 - per-process state
    _template_current, _script = True, None


def ensure_template() -> None:
    """Migrate the template once per process, before the first clone (outside a signup's
    transaction, so the template does not depend on that signup committing)."""
    if _template_current:
        return
    with _checked:
        if not _template_current:
            migrate_template()


def create_tenant_schema(schema_name: str) -> None:
    """Create `schema_name` as a copy of the template, in the caller's transaction.

    One round trip: the copy is a script read from the template's catalog once per process
    (the template only changes by migration, which starts a new script).
    """
    if not SCHEMA_NAME.fullmatch(schema_name):
        raise ValueError(f"{schema_name!r} is not a tenant schema name")
    ensure_template()
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(_clone_script(cursor).replace(SCHEMA_PLACEHOLDER, f'"{schema_name}"'))


def _clone_script(cursor) -> str:  # type: ignore[no-untyped-def]
    """The SQL that copies the template into SCHEMA_PLACEHOLDER.

    Tables come from `LIKE` (columns, defaults, identity); constraints and indexes are then
    made under the template's names, not LIKE's generated ones, because later migrations find
    them by name. Rows come before foreign keys, and identities move on past copied ids.
    """
    global _script  # noqa: PLW0603 - per-process cache, dropped when the template migrates
    if _script is not None:
        return _script
    _refuse_what_a_clone_would_miss(cursor)
    target = SCHEMA_PLACEHOLDER
    statements = [f"CREATE SCHEMA {target}"]
    tables = _tables(cursor)
    statements += [
        f'CREATE TABLE {target}."{table}" (LIKE "{TEMPLATE_SCHEMA}"."{table}" '
        "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED "
        "INCLUDING STORAGE INCLUDING COMMENTS)"
        for table in tables
    ]
    statements += [
        f'ALTER TABLE {target}."{table}" ADD CONSTRAINT "{name}" {_moved(definition)}'
        for table, name, definition in _constraints(cursor, "c", "p", "u", "x")
    ]
    statements += [_moved(definition) for definition in _indexes_without_constraints(cursor)]
    for table, identity in _tables_with_rows(cursor, tables):
        statements.append(
            f'INSERT INTO {target}."{table}" SELECT * FROM "{TEMPLATE_SCHEMA}"."{table}"'  # noqa: S608 - catalog names
        )
        if identity:
            statements.append(
                f"SELECT setval(pg_get_serial_sequence('{target}.\"{table}\"', '{identity}'), "  # noqa: S608 - catalog names
                f'(SELECT max("{identity}") FROM {target}."{table}"))'
            )
    statements += [
        f'ALTER TABLE {target}."{table}" ADD CONSTRAINT "{name}" {_moved(definition)}'
        for table, name, definition in _constraints(cursor, "f")
    ]
    _script = ";\n".join(statements)
    return _script


def _moved(definition: str) -> str:
    """A definition read from the template, naming the new schema instead."""
    return definition.replace(f"{TEMPLATE_SCHEMA}.", f"{SCHEMA_PLACEHOLDER}.")


def _tables(cursor) -> list[str]:  # type: ignore[no-untyped-def]
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname",
        [TEMPLATE_SCHEMA],
    )
    return [row[0] for row in cursor.fetchall()]


def _tables_with_rows(cursor, tables: list[str]) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(table, its identity column or "") for each template table that holds rows."""
    found = []
    for table in tables:
        cursor.execute(f'SELECT EXISTS (SELECT 1 FROM "{TEMPLATE_SCHEMA}"."{table}")')  # noqa: S608 - catalog names
        if cursor.fetchone()[0]:
            cursor.execute(
                "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND a.attidentity <> ''",
                [TEMPLATE_SCHEMA, table],
            )
            identity = cursor.fetchone()
            found.append((table, identity[0] if identity else ""))
    return found


def _constraints(cursor, *kinds: str) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    cursor.execute(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND k.contype = ANY(%s) ORDER BY c.relname, k.conname",
        [TEMPLATE_SCHEMA, list(kinds)],
    )
    return [(table, name, definition) for table, name, definition in cursor.fetchall()]


def _indexes_without_constraints(cursor) -> list[str]:  # type: ignore[no-untyped-def]
    cursor.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY c.relname",
        [TEMPLATE_SCHEMA],
    )
    return [row[0] for row in cursor.fetchall()]


def _refuse_what_a_clone_would_miss(cursor) -> None:  # type: ignore[no-untyped-def]
    cursor.execute(
        "SELECT c.relkind, c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "AND c.relkind NOT IN ('r', 'i') AND NOT (c.relkind = 'S' AND EXISTS ("
        "  SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'i'))",
        [TEMPLATE_SCHEMA],
    )
    others = [f"{name} (relkind {kind})" for kind, name in cursor.fetchall()]
    cursor.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s UNION ALL SELECT t.tgname FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND NOT t.tgisinternal "
        "UNION ALL SELECT a.adrelid::regclass::text FROM pg_attrdef a "
        "JOIN pg_class c ON c.oid = a.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND pg_get_expr(a.adbin, a.adrelid) LIKE %s",
        [TEMPLATE_SCHEMA, TEMPLATE_SCHEMA, TEMPLATE_SCHEMA, f"%{TEMPLATE_SCHEMA}%"],
    )
    others += [str(row[0]) for row in cursor.fetchall()]
    if others:
        raise TemplateSchemaError(
            f"the tenant template holds objects a clone would not copy: {', '.join(others)}; "
            "teach tenants/schemas.py to copy them (or migrate new schemas instead)"
        )
