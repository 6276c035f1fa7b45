"""Shared fixtures: two tenants signed up through the real service, each with its own client."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from tenants.models import Tenant

# Parallel runs (`make test`: pytest-xdist, --dist loadgroup): a file's tests stay on one
# worker, so module fixtures start once; the files that share the session's `hallmark up`
# (the control_plane fixture) share a worker, so it starts once. The heaviest groups are
# queued first so the workers finish together (figures from `pytest --durations`).
SHARED_PLANE_GROUP = "control-plane"
HEAVIEST_FIRST = (
    "tests/e2e/test_rotation_e2e.py",
    "tests/e2e/test_agent_survival.py::outage",
    "tests/e2e/test_faults.py",
    "tests/config/test_embedded.py",
    SHARED_PLANE_GROUP,
    "tests/issuance/test_agentapi_scaleout.py",
    "tests/e2e/test_abuse.py",
    "tests/issuance/test_agent_api_sync_scale.py",
    "tests/e2e/test_demo.py",
    "tests/e2e/test_drain.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def path(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    on_shared_plane = {path(item) for item in items if "control_plane" in item.fixturenames}
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = SHARED_PLANE_GROUP if path(item) in on_shared_plane else path(item)
            item.add_marker(pytest.mark.xdist_group(group))
    rank = {group: position for position, group in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.get_closest_marker("xdist_group").args[0], len(rank)))


def pytest_configure(config: pytest.Config) -> None:
    """The controlling process says it plainly before any worker starts (a worker's own
    refusal below reaches the terminal only as an internal error)."""
    if config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple >= (9,):
        import xdist

        if tuple(int(part) for part in xdist.__version__.split(".")[:2]) <= (3, 8):
            raise pytest.UsageError(
                f"pytest {pytest.__version__} with pytest-xdist {xdist.__version__} ignores "
                "--dist loadgroup (xdist names groups through Item._nodeid, which pytest 9 "
                "no longer reads): install the pytest pyproject pins (make test does)"
            )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run when xdist's groups did not take: pytest-xdist names a grouped test
    `<nodeid>@<group>` to schedule it, and a pytest it does not know can drop that silently
    (pytest 9 did: every worker then started its own shared plane and module fixtures)."""
    if getattr(session.config.option, "loadgroup", False) and session.items:
        if not any("@" in item.nodeid for item in session.items):
            raise pytest.UsageError(
                "pytest-xdist's --dist loadgroup did not group the tests (no node id carries "
                "'@<group>'): check that the installed pytest is one pytest-xdist supports "
                "(pyproject pins pytest<9 for pytest-xdist 3.8)"
            )


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


@pytest.fixture
def seeded_plans(db: None) -> None:
    """The plans migration 0002 seeds, whatever an earlier test on this worker left: with
    xdist's groups some earlier test empties the public plans table (seen in two grouped runs,
    on different workers; not pinned down), and the billing and operator tests need them."""
    import importlib

    from tenants.billing.models import Plan

    seeded = importlib.import_module("tenants.billing.migrations.0002_seed_plans")
    for fields in seeded.PLANS:
        Plan.objects.get_or_create(name=fields["name"], defaults=fields)


@pytest.fixture(autouse=True)
def _public_schema_after_each_test() -> Iterator[None]:
    yield
    from django.db import connection

    with contextlib.suppress(Exception):
        connection.set_schema_to_public()


@pytest.fixture(autouse=True)
def _fresh_attestation_failure_counts() -> None:
    """Every test's clients come from 127.0.0.1: failed attestations counted in Redis by an
    earlier test (the window outlives it) must not refuse this test's agents."""
    import redis
    from django.conf import settings

    from issuance.agentapi.limits import SharedFailureCount

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    with contextlib.suppress(redis.RedisError), client:
        # KEYS, one round trip scanned inside Redis: SCAN's pages cost ~9 ms a test here
        # (~26 s of a suite run), and this Redis is the test session's own.
        keys = client.keys(SharedFailureCount.KEY.format(source="*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def vault_unreachable(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Point the key managers at a closed port for one test (a real connection refusal)."""
    from trustdomains.keymanagers import reset_key_managers

    settings.VAULT_ADDR = "http://127.0.0.1:9"  # the discard port: nothing listens here
    reset_key_managers()
    yield
    reset_key_managers()


@pytest.fixture(scope="session", autouse=True)
def _deletes_instead_of_flush() -> Iterator[None]:
    """Transactional tests end with one transaction of DELETEs, not Django's flush (see
    tests/fastflush.py: ~0.4 s less after each of ~500 tests)."""
    from tests.fastflush import deletes_instead_of_flush

    with deletes_instead_of_flush():
        yield


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker) -> None:  # type: ignore[no-untyped-def]
    """The test database, with the tenant template that every signup copies migrated once."""
    from tenants.schemas import migrate_template

    with django_db_blocker.unblock():
        migrate_template()
