"""Migrating tenant schemas at scale: only the schemas that are behind, loudly.

`migrate_schemas` visits every tenant schema on every run: with a thousand tenants that is
minutes at each `hallmark up`, even when nothing changed. Each tenant row records the
fingerprint of the tenant migrations its schema has (`Tenant.migrated_to`); the code's
fingerprint is a hash of every tenant app's migration names, so a new migration changes it.
A run migrates the schemas whose fingerprint differs, records the new one for each schema that
succeeded, and reports every schema that failed (the caller exits non-zero), so one broken
schema can neither stop the others nor go unnoticed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from tenants.models import Tenant

log = logging.getLogger(__name__)


@dataclass
class MigrationRun:
    """What one run did: schemas migrated, left alone, and failed (with the reason)."""

    fingerprint: str
    migrated: list[str] = field(default_factory=list)
    current: int = 0
    failed: dict[str, str] = field(default_factory=dict)


class SchemasFailedToMigrate(RuntimeError):
    """At least one tenant schema could not be migrated; the others were."""

    def __init__(self, message: str, run: MigrationRun) -> None:
        super().__init__(message)
        self.run = run


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 over the names of every migration of the tenant apps, as the code has them."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    tenant_apps = {app.rsplit(".", 1)[-1] for app in settings.TENANT_APPS}
    names = sorted(f"{app}.{name}" for app, name in loader.disk_migrations if app in tenant_apps)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def migrate_tenant_schemas(
    *, progress: Callable[[str], None] | None = None, verbosity: int = 0
) -> MigrationRun:
    """Bring every tenant schema that is behind the code up to date."""
    say = progress or (lambda message: log.info("%s", message))
    run = MigrationRun(fingerprint=code_fingerprint())
    connection.set_schema_to_public()
    tenants = Tenant.objects.exclude(schema_name=settings.PUBLIC_SCHEMA_NAME)
    run.current = tenants.filter(migrated_to=run.fingerprint).count()
    behind = list(
        tenants.exclude(migrated_to=run.fingerprint)
        .order_by("created_at")
        .values_list("schema_name", "slug")
    )
    say(f"tenant schemas: {run.current} current, {len(behind)} to migrate")
    for number, (schema_name, slug) in enumerate(behind, start=1):
        try:
            call_command(
                "migrate_schemas",
                schema_name=schema_name,
                interactive=False,
                verbosity=verbosity,
            )
        except Exception as exc:  # each schema on its own; all failures are reported
            run.failed[slug] = f"{type(exc).__name__}: {exc}"
            log.exception("tenant %s (schema %s) failed to migrate", slug, schema_name)
        else:
            connection.set_schema_to_public()
            Tenant.objects.filter(schema_name=schema_name).update(migrated_to=run.fingerprint)
            run.migrated.append(slug)
        finally:
            connection.set_schema_to_public()
        if number % 50 == 0 or number == len(behind):
            say(f"migrated {number}/{len(behind)} tenant schemas")
    if run.failed:
        listing = "; ".join(f"{slug}: {reason}" for slug, reason in run.failed.items())
        raise SchemasFailedToMigrate(
            f"{len(run.failed)} tenant schema(s) could not be migrated ({listing}); the other "
            "schemas were. Fix the cause and run `hallmark migrate` again: it retries only "
            "the schemas that are still behind.",
            run,
        )
    return run
