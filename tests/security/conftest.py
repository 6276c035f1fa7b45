"""Cheap fixtures for the attack matrix: tenants signed up once a module, removed afterwards.

Signing up creates a schema, CA keys and key-manager credentials, so the matrix signs its two
tenants up once per module (committed, outside any test transaction) and tears them down at
the end of it. REST cases then run inside a rolled-back transaction each, so a broken check
that changes tenant B cannot leak into the next case.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import pytest
from django.utils import timezone

# The agent's Workload API server over a static state, for the Workload API matrix.
from tests.agent.conftest import workload_server  # noqa: F401 - a fixture, used by name
from tests.conftest import TenantHandle, make_tenant


def discard_tenant(handle: TenantHandle) -> None:
    """Remove a tenant made by `make_tenant`: key material, schema, rows, owner."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tenants.models import AuditEvent, Membership, Tenant
    from trustdomains.services import discard_key_material

    connection.set_schema_to_public()
    tenant = Tenant.objects.filter(pk=handle.tenant.pk).first()
    if tenant is None:
        return
    with contextlib.suppress(Exception):
        discard_key_material(tenant=tenant)
    users = list(Membership.objects.filter(tenant=tenant).values_list("user_id", flat=True))
    AuditEvent.objects.filter(tenant=tenant).delete()
    tenant.delete(force_drop=True)
    get_user_model().objects.filter(pk__in=users).delete()


def revoked_token_of(handle: TenantHandle) -> str:
    """A second API token of the tenant, revoked: it must open nothing any more."""
    from tenants.models import ApiToken
    from tenants.services import issue_api_token
    from tenants.tokens import hash_token

    secret = issue_api_token(tenant=handle.tenant, name="revoked")
    ApiToken.objects.filter(token_hash=hash_token(secret)).update(
        revoked_at=timezone.now() - dt.timedelta(seconds=1)
    )
    return secret


def token_of_deleted_tenant() -> str:
    """The signup token of a tenant that no longer exists (deleted with its schema)."""
    gone = make_tenant("gone")
    discard_tenant(gone)
    return gone.token


@pytest.fixture(scope="module")
def module_db(django_db_setup, django_db_blocker) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Database access for module-scoped, committed set-up (and its teardown).

    pytest-django creates the test database only when some collected test is marked
    `django_db`; without one this would reach the configured database itself, so refuse.
    """
    from django.db import connection

    name = str(connection.settings_dict["NAME"])
    assert name.startswith("test_"), (
        f"not the test database ({name}): mark the module's tests with pytest.mark.django_db"
    )
    with django_db_blocker.unblock():
        yield


@contextlib.contextmanager
def two_tenants(upstream_authority: str = "") -> Iterator[tuple[TenantHandle, TenantHandle]]:
    handles: list[TenantHandle] = []
    try:
        handles.append(make_tenant("a", upstream_authority=upstream_authority))
        handles.append(make_tenant("b", upstream_authority=upstream_authority))
        yield handles[0], handles[1]
    finally:
        for handle in handles:
            discard_tenant(handle)
