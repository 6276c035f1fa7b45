"""Shared fixtures: two tenants signed up through the real service, each with its own client."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from tenants.models import Tenant


@dataclass
class TenantHandle:
    """A signed-up tenant as tests see it."""

    tenant: Tenant
    token: str
    trust_domain: str
    client: APIClient

    @contextlib.contextmanager
    def schema(self) -> Iterator[Tenant]:
        from tenants.scoping import tenant_schema

        with tenant_schema(self.tenant):
            yield self.tenant


def make_tenant(label: str, *, upstream_authority: str = "") -> TenantHandle:
    from tenants import services

    suffix = uuid.uuid4().hex[:8]
    result = services.signup(
        name=f"Tenant {label} {suffix}",
        trust_domain=f"{label}-{suffix}.test",
        email=f"owner-{label}-{suffix}@example.com",
        password="correct horse battery staple",
        upstream_authority=upstream_authority,
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {result.token}")
    return TenantHandle(
        tenant=result.tenant,
        token=result.token,
        trust_domain=result.tenant.trust_domain,
        client=client,
    )


@pytest.fixture
def tenant_a(db: None) -> TenantHandle:
    return make_tenant("a")


@pytest.fixture
def tenant_b(db: None) -> TenantHandle:
    return make_tenant("b")


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture(autouse=True)
def _public_schema_after_each_test() -> Iterator[None]:
    yield
    from django.db import connection

    with contextlib.suppress(Exception):
        connection.set_schema_to_public()


@pytest.fixture
def vault_unreachable(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Point the key managers at a closed port for one test (a real connection refusal)."""
    from trustdomains.keymanagers import reset_key_managers

    settings.VAULT_ADDR = "http://127.0.0.1:9"  # the discard port: nothing listens here
    reset_key_managers()
    yield
    reset_key_managers()
