"""Empty the public tables after a transactional test without Django's `flush`.

Django's `flush` (what pytest-django's `transactional_db` runs after each test) TRUNCATEs every
table and then re-creates every content type and permission through `post_migrate`: ~0.4 s on
this project's 60-odd public tables, after each of some 500 transactional tests. The same
emptiness comes from one transaction of `DELETE`s (Django makes PostgreSQL foreign keys
DEFERRABLE INITIALLY DEFERRED, so the order does not matter), ~20x faster on tables that hold a
test's few rows. Content types and permissions are left as the migrations made them: no test
changes them, and `flush` would only have re-created the same rows.

Tenant schemas a test made stay, as they did under `flush`; their tenant rows are gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction
from django.test import TransactionTestCase

# Rows the migrations make and `post_migrate` would re-make the same; no test writes them.
KEPT = frozenset({"django_content_type", "auth_permission"})


def empty_public_tables(alias: str) -> None:
    connection = connections[alias]
    connection.set_schema_to_public()
    tables = [
        table
        for table in connection.introspection.django_table_names(
            only_existing=True, include_views=False
        )
        if table not in KEPT
    ]
    if not tables:
        return
    quote = connection.ops.quote_name
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        cursor.execute("; ".join(f"DELETE FROM {quote(table)}" for table in tables))


def _fixture_teardown(self: TransactionTestCase) -> None:
    for alias in self._databases_names(include_mirrors=False):  # type: ignore[attr-defined]
        empty_public_tables(alias)


@contextmanager
def deletes_instead_of_flush() -> Iterator[None]:
    original = TransactionTestCase._fixture_teardown
    TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[method-assign]
    try:
        yield
    finally:
        TransactionTestCase._fixture_teardown = original  # type: ignore[method-assign]
