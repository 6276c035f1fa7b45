"""Scheduled rotation of X.509 CAs and JWT keys: SPIRE's thresholds, publish before signing."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection

from hallmark.spiffeid import SpiffeId
from hallmark.x509svid import LeafRequest
from tenants.models import AuditEvent
from tenants.scoping import TenantRequired
from tests.conftest import make_tenant
from tests.trustdomains.changes import (
    HOUR,
    ChangeListener,
    journal,
    sequence,
    start_of,
    statuses,
)
from trustdomains import services
from trustdomains.keymanagers import get_key_manager
from trustdomains.models import JwtAuthority, X509Authority
from trustdomains.tasks import rotate_trust_domain

pytestmark = pytest.mark.django_db(transaction=True)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def tenant(default_key_manager):
    """A tenant whose trust domain was provisioned with the test's key-manager backend."""
    return make_tenant("rot")


def rotate(handle, at: dt.datetime) -> list[str]:
    return rotate_trust_domain(str(handle.tenant.id), at=at.timestamp())


def published_cas(handle) -> list:
    with handle.schema():
        return list(services.current_bundle().x509_authorities)


def test_nothing_rotates_before_half_life(tenant_a):
    # given a fresh 24 h CA and JWT key
    start, before = start_of(tenant_a), sequence(tenant_a)

    # when rotation runs just before 12 h
    changes = rotate(tenant_a, start + 12 * HOUR - MINUTE)

    # then nothing changed and the bundle keeps its sequence
    assert changes == []
    assert sequence(tenant_a) == before
    assert statuses(tenant_a) == ["active"] and statuses(tenant_a, JwtAuthority) == ["active"]


def test_half_life_prepares_a_published_authority_in_the_trust_domains_key_manager(
    tenant, backend, settings
):
    # given a tenant on `backend`, with the platform default since switched to the other one
    settings.DEFAULT_KEY_MANAGER = "pkcs11" if backend == "vault" else "vault"
    start, before = start_of(tenant), sequence(tenant)
    listener = ChangeListener(tenant.tenant.id)
    try:
        # when rotation runs at 12 h
        changes = rotate(tenant, start + 12 * HOUR + MINUTE)
        kinds = listener.kinds(wait=2)
    finally:
        listener.close()

    # then a prepared CA and JWT key exist, in the trust domain's key manager, and the bundle
    # publishes them under a higher sequence, announced to agents
    assert sorted(c.split(":")[:2] for c in changes) == [["jwt", "prepare"], ["x509", "prepare"]]
    assert statuses(tenant) == ["active", "prepared"]
    assert statuses(tenant, JwtAuthority) == ["active", "prepared"]
    assert sequence(tenant) > before and "bundle" in kinds
    with tenant.schema():
        prepared = X509Authority.objects.get(status="prepared")
        jwt_prepared = JwtAuthority.objects.get(status="prepared")
        bundle = services.current_bundle()
    assert prepared.key_manager == jwt_prepared.key_manager == backend
    manager = get_key_manager(backend)
    assert manager.signer(prepared.key_ref).public_key() == prepared.certificate.public_key()
    assert manager.signer(jwt_prepared.key_ref).public_key() == jwt_prepared.public_key
    assert prepared.certificate in bundle.x509_authorities
    assert jwt_prepared.key_id in [a.key_id for a in bundle.jwt_authorities]
    # and the audit log names the rotation as the actor
    actions = set(
        AuditEvent.objects.filter(tenant=tenant.tenant, actor="system:rotation").values_list(
            "action", flat=True
        )
    )
    assert actions == {"x509_authority.prepare", "jwt_authority.prepare"}


def test_prepared_authority_signs_nothing_until_five_sixths(tenant_a):
    # given a prepared CA at 12 h
    start = start_of(tenant_a)
    rotate(tenant_a, start + 12 * HOUR + MINUTE)
    with tenant_a.schema():
        first = X509Authority.objects.get(status="active")
        prepared = X509Authority.objects.get(status="prepared")

    # when rotation runs just before 20 h, then SVIDs are still signed by the first CA
    assert rotate(tenant_a, start + 20 * HOUR - MINUTE) == []
    assert issuer_of_new_svid(tenant_a) == first.certificate.public_key()

    # when rotation runs at 20 h
    before = sequence(tenant_a)
    changes = rotate(tenant_a, start + 20 * HOUR + MINUTE)

    # then the prepared CA is active, the first is old and still published, sequence bumped
    assert f"x509:activate:{prepared.id}" in changes
    assert statuses(tenant_a) == ["old", "active"]
    assert statuses(tenant_a, JwtAuthority) == ["old", "active"]
    assert sequence(tenant_a) > before
    assert published_cas(tenant_a) == [first.certificate, prepared.certificate]
    assert issuer_of_new_svid(tenant_a) == prepared.certificate.public_key()


def issuer_of_new_svid(handle) -> ec.EllipticCurvePublicKey:
    request = LeafRequest(
        SpiffeId.parse(f"spiffe://{handle.trust_domain}/workload"),
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        dt.timedelta(minutes=5),
    )
    with handle.schema():
        [[leaf]] = services.sign_x509_svids([request])
        cas = {a.id: a.certificate for a in X509Authority.objects.all()}
    for ca in cas.values():
        try:
            leaf.verify_directly_issued_by(ca)
        except Exception:  # noqa: S112 - not this CA
            continue
        return ca.public_key()
    raise AssertionError("the SVID was signed by none of the trust domain's CAs")


def test_a_late_prepare_is_not_activated_in_the_same_run(tenant_a):
    # given rotation that did not run before 21 h (past the activation point)
    start = start_of(tenant_a)

    # when it runs at 21 h, the new authority is only prepared (published first)
    rotate(tenant_a, start + 21 * HOUR)
    assert statuses(tenant_a) == ["active", "prepared"]

    # and the next run activates it
    rotate(tenant_a, start + 21 * HOUR + dt.timedelta(seconds=10))
    assert statuses(tenant_a) == ["old", "active"]


def test_rotation_is_idempotent_at_the_same_moment(tenant_a):
    # given rotation done at 12 h
    at = start_of(tenant_a) + 12 * HOUR + MINUTE
    rotate(tenant_a, at)
    before = sequence(tenant_a)

    # when it runs again for the same moment, then nothing changes
    assert rotate(tenant_a, at) == []
    assert sequence(tenant_a) == before
    assert statuses(tenant_a) == ["active", "prepared"]


def test_expired_authority_is_pruned_after_the_grace_period_with_a_sequence_bump(
    tenant_a, settings
):
    # given a grace period of one hour and the first CA old since 20 h
    settings.PRUNE_GRACE_SECONDS = 3600
    start = start_of(tenant_a)
    rotate(tenant_a, start + 12 * HOUR + MINUTE)
    rotate(tenant_a, start + 20 * HOUR + MINUTE)
    first = published_cas(tenant_a)[0]

    # when the first CA has just expired, then it is still published (not pruned yet)
    changes = rotate(tenant_a, start + 24 * HOUR + 2 * MINUTE)
    assert not [c for c in changes if ":prune:" in c]
    assert first in published_cas(tenant_a)
    before = sequence(tenant_a)

    # when the grace period is over
    changes = rotate(tenant_a, start + 25 * HOUR + 2 * MINUTE)

    # then the first CA and JWT key are pruned, under a new sequence, and audited
    assert sorted(c.split(":")[:2] for c in changes) == [["jwt", "prune"], ["x509", "prune"]]
    assert first not in published_cas(tenant_a)
    assert sequence(tenant_a) > before
    assert journal(tenant_a) == [
        ("old", False, True),
        ("active", False, False),
        ("prepared", False, False),
    ]
    with tenant_a.schema():
        kids = [a.key_id for a in services.current_bundle().jwt_authorities]
        pruned = JwtAuthority.objects.get(pruned_at__isnull=False).key_id
    assert len(kids) == 2 and pruned not in kids
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="x509_authority.prune").exists()


def test_an_expired_active_authority_is_replaced_at_once(tenant, backend):
    # given rotation that never ran during the CA's whole life (workers down for 30 h)
    start = start_of(tenant)

    # when it finally runs
    rotate(tenant, start + 30 * HOUR)

    # then a new authority signs at once and the expired one stays published until pruned
    assert statuses(tenant) == ["old", "active"]
    assert statuses(tenant, JwtAuthority) == ["old", "active"]
    with tenant.schema():
        fresh = X509Authority.objects.get(status="active")
    assert fresh.key_manager == backend
    assert fresh.not_after > start + 30 * HOUR
    assert len(published_cas(tenant)) == 2


def test_rotation_of_one_tenant_leaves_the_other_untouched(tenant_a, tenant_b):
    # given two tenants; when only A's rotation task runs, from the public schema
    before_b = sequence(tenant_b)
    rotate(tenant_a, start_of(tenant_a) + 12 * HOUR + MINUTE)

    # then A has a prepared CA, B has none, and the connection is back in the public schema
    assert statuses(tenant_a) == ["active", "prepared"]
    assert statuses(tenant_b) == ["active"] and sequence(tenant_b) == before_b
    assert connection.schema_name == "public"


@pytest.mark.parametrize("tenant_id", [None, ""])
def test_rotation_task_refuses_to_run_without_a_tenant(tenant_id):
    # when the tenant task is called without a tenant; then it refuses loudly
    with pytest.raises(TenantRequired):
        rotate_trust_domain(tenant_id)
