"""JWT signing keys: held in OpenBao, journaled per tenant, published, created once."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time

import hvac
import hvac.exceptions
import pytest
import redis
from django.conf import settings
from django.db import connection, transaction

from hallmark.signing import sha256
from hallmark.x509svid import utcnow
from tenants.events import CHANNEL, shared_redis
from tenants.models import AuditEvent
from trustdomains import bundles, services
from trustdomains.keymanagers import KeyAccessDenied, KeyManagerUnavailable, get_key_manager
from trustdomains.models import JwtAuthority, TrustDomain

pytestmark = pytest.mark.django_db(transaction=True)
KID = re.compile(r"[A-Za-z0-9_-]{32}")


def platform_client() -> hvac.Client:
    return hvac.Client(url=settings.VAULT_ADDR, token=settings.VAULT_TOKEN)


def active_jwt_authority(handle) -> JwtAuthority:
    with handle.schema():
        return JwtAuthority.objects.select_related("trust_domain").get(status="active")


def forget_jwt_authorities(handle) -> None:
    """Make the tenant look provisioned before JWT keys existed (no JwtAuthority rows).

    Such a trust domain never had a bundle with JWT keys cached either, so the cached one
    (from provisioning) goes too.
    """
    with handle.schema():
        JwtAuthority.objects.all().delete()
    bundles.forget_local()
    shared_redis().delete(bundles.CACHE_KEY.format(tenant_id=handle.tenant.id))


def sequence(handle) -> int:
    with handle.schema():
        return TrustDomain.objects.get().bundle_sequence


class ChangeListener:
    """A real redis-py subscription to one tenant's change channel."""

    def __init__(self, tenant_id) -> None:
        self._client = redis.Redis.from_url(settings.REDIS_URL)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(CHANNEL.format(tenant_id=tenant_id))
        self._pubsub.get_message(timeout=5)  # the subscription confirmation

    def messages(self, wait: float) -> list[dict]:
        found, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None:
                found.append(json.loads(message["data"]))
        return found

    def close(self) -> None:
        self._pubsub.close()
        self._client.close()


def test_provisioning_creates_one_active_jwt_authority_with_a_random_kid(tenant_a, tenant_b):
    # given two signed-up tenants; when their JWT authorities are read
    a, b = active_jwt_authority(tenant_a), active_jwt_authority(tenant_b)

    # then each has exactly one active key with a URL-safe random kid, living as long as a CA
    for handle, authority in ((tenant_a, a), (tenant_b, b)):
        with handle.schema():
            assert JwtAuthority.objects.count() == 1
        assert KID.fullmatch(authority.key_id)
        assert authority.key_ref.startswith(f"hallmark-{handle.tenant.id.hex}-jwt-")
        assert authority.key_id not in authority.key_ref
        lifetime = authority.not_after - authority.not_before
        assert lifetime == dt.timedelta(seconds=settings.CA_TTL_SECONDS)
        assert authority.public_key.curve.name == "secp256r1"
    assert a.key_id != b.key_id
    assert a.public_key.public_numbers() != b.public_key.public_numbers()


def test_jwt_key_is_non_exportable_in_openbao(tenant_a):
    # given tenant A's JWT key
    authority = active_jwt_authority(tenant_a)

    # when OpenBao describes it, and is asked to export or back it up (with the platform token)
    data = platform_client().secrets.transit.read_key(authority.key_ref)["data"]

    # then it is a P-256 key that never leaves OpenBao, whose public half is the stored one
    assert data["type"] == "ecdsa-p256"
    assert data["exportable"] is False
    assert data["allow_plaintext_backup"] is False
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not exportable"):
        platform_client().secrets.transit.export_key(authority.key_ref, key_type="signing-key")
    with pytest.raises(hvac.exceptions.VaultError):
        platform_client().secrets.transit.backup_key(authority.key_ref)
    public_pem = data["keys"][str(data["latest_version"])]["public_key"]
    from cryptography.hazmat.primitives import serialization

    vault_key = serialization.load_pem_public_key(public_pem.encode())
    assert vault_key.public_numbers() == authority.public_key.public_numbers()


def test_tenant_token_cannot_sign_with_another_tenants_jwt_key(tenant_a, tenant_b):
    # given both tenants' JWT keys
    key_a, key_b = active_jwt_authority(tenant_a).key_ref, active_jwt_authority(tenant_b).key_ref
    manager = get_key_manager("vault")
    digest = sha256(b"forged jwt")

    # when tenant A's scoped token is used to sign with, or read, B's JWT key; then OpenBao refuses
    with pytest.raises(KeyAccessDenied) as raised:
        manager.signer(key_b, tenant_id=tenant_a.tenant.id).sign_digest(digest)
    assert raised.value.code == "key_access_denied"
    with pytest.raises(KeyAccessDenied):
        manager.signer(key_b, tenant_id=tenant_a.tenant.id).sign_digests([digest, digest])
    with pytest.raises(KeyAccessDenied):
        manager.signer(key_b, tenant_id=tenant_a.tenant.id).public_key()
    # while A's token signs with A's own JWT key
    assert manager.signer(key_a).sign_digest(digest)


def test_bundle_publishes_prepared_active_and_old_jwt_keys_but_not_pruned_or_revoked(tenant_a):
    # given the active key plus an old, a pruned and a revoked one
    active = active_jwt_authority(tenant_a)
    with tenant_a.schema():
        rows = {}
        for label, changes in (
            ("old", {}),
            ("pruned", {"not_after": utcnow(), "pruned_at": utcnow()}),
            ("revoked", {"revoked": True}),
        ):
            rows[label] = JwtAuthority.objects.create(
                trust_domain=active.trust_domain,
                key_id=f"kid-{label}",
                status="old",
                key_manager="vault",
                key_ref=f"hallmark-test-{label}",
                public_key_der=active.public_key_der,
                not_before=active.not_before,
                not_after=changes.get("not_after", active.not_after),
                revoked=changes.get("revoked", False),
                pruned_at=changes.get("pruned_at"),
            )
        # when the bundle is built from the journal
        bundle, _ = services.build_bundle()

    # then the active and the old key are in it, in age order, the others are not
    assert [a.key_id for a in bundle.jwt_authorities] == [active.key_id, "kid-old"]


def test_adding_a_jwt_authority_bumps_the_bundle_sequence_and_is_audited(tenant_a):
    # given the tenant's bundle as published now
    before = sequence(tenant_a)

    # when a prepared JWT authority is added
    with tenant_a.schema():
        prepared = services.prepare_jwt_authority(actor="token:test")
        bundle = services.current_bundle()

    # then the bundle carries it under a higher sequence, and the audit log says who added it
    assert prepared.status == "prepared"
    assert bundle.sequence == before + 1 == sequence(tenant_a)
    assert prepared.key_id in [a.key_id for a in bundle.jwt_authorities]
    assert len(bundle.jwt_authorities) == 2
    event = AuditEvent.objects.get(tenant=tenant_a.tenant, action="jwt_authority.prepare")
    assert event.actor == "token:test" and event.target == prepared.key_id
    # and the active key still signs
    assert active_jwt_authority(tenant_a).key_id != prepared.key_id


def test_bundle_change_is_published_to_redis_after_commit(tenant_a):
    # given a subscriber on tenant A's change channel
    listener = ChangeListener(tenant_a.tenant.id)
    try:
        # when a JWT authority is added
        with tenant_a.schema():
            services.prepare_jwt_authority(actor="token:test")

        # then a "bundle" change arrives on the channel
        messages = listener.messages(wait=3)
    finally:
        listener.close()
    assert [m["kind"] for m in messages] == ["bundle"]


def test_no_bundle_change_is_published_when_the_transaction_rolls_back(tenant_a):
    # given a subscriber on tenant A's change channel
    listener = ChangeListener(tenant_a.tenant.id)
    before = sequence(tenant_a)
    try:
        # when a JWT authority is added inside a transaction that then fails
        with tenant_a.schema(), pytest.raises(RuntimeError), transaction.atomic():
            services.prepare_jwt_authority(actor="token:test")
            raise RuntimeError("later step failed")

        # then nothing is announced and nothing is stored
        messages = listener.messages(wait=1.5)
    finally:
        listener.close()
    assert messages == []
    assert sequence(tenant_a) == before
    with tenant_a.schema():
        assert JwtAuthority.objects.count() == 1


def test_ensure_creates_a_jwt_authority_for_a_trust_domain_provisioned_without_one(tenant_a):
    # given a tenant whose trust domain predates JWT keys
    forget_jwt_authorities(tenant_a)
    before = sequence(tenant_a)

    # when the active JWT authority is ensured
    with tenant_a.schema():
        created = services.ensure_jwt_authority()

    # then one active key exists, the bundle sequence moved on, and the creation is audited
    assert created.status == "active" and KID.fullmatch(created.key_id)
    assert active_jwt_authority(tenant_a).id == created.id
    assert sequence(tenant_a) == before + 1
    assert AuditEvent.objects.filter(
        tenant=tenant_a.tenant, action="jwt_authority.create", target=created.key_id
    ).exists()


def test_ensure_jwt_authority_is_idempotent(tenant_a):
    # given a tenant with its active JWT authority
    existing = active_jwt_authority(tenant_a)
    before = sequence(tenant_a)

    # when it is ensured twice
    with tenant_a.schema():
        first, second = services.ensure_jwt_authority(), services.ensure_jwt_authority()

    # then the existing key is answered both times and nothing changed
    assert first.id == second.id == existing.id
    assert sequence(tenant_a) == before
    with tenant_a.schema():
        assert JwtAuthority.objects.count() == 1


def test_concurrent_ensure_creates_exactly_one_jwt_authority(tenant_a):
    # given a trust domain without JWT keys and two threads, each with its own DB connection
    forget_jwt_authorities(tenant_a)
    before = sequence(tenant_a)
    start = threading.Barrier(2)
    results: list[str] = []
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            with tenant_a.schema():
                start.wait(timeout=10)
                results.append(str(services.ensure_jwt_authority().id))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    # when both ensure the JWT authority at the same moment
    threads = [threading.Thread(target=ensure) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # then both get the same, single key and the bundle changed once
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    with tenant_a.schema():
        assert JwtAuthority.objects.count() == 1
    assert sequence(tenant_a) == before + 1


def test_expired_active_jwt_authority_is_retired_and_replaced(tenant_a):
    # given an active JWT key that has expired
    expired = active_jwt_authority(tenant_a)
    with tenant_a.schema():
        JwtAuthority.objects.filter(id=expired.id).update(
            not_after=utcnow() - dt.timedelta(seconds=1)
        )

        # when the active JWT authority is ensured
        fresh = services.ensure_jwt_authority()
        expired.refresh_from_db()

    # then a new key is active and the expired one is old (in the bundle until it is pruned)
    assert fresh.id != expired.id and fresh.status == "active"
    assert expired.status == "old"
    with tenant_a.schema():
        published = [a.key_id for a in services.current_bundle().jwt_authorities]
    assert published == [expired.key_id, fresh.key_id]


def test_ensure_with_key_manager_unreachable_fails_and_stores_nothing(tenant_a, vault_unreachable):
    # given a trust domain without JWT keys, and the key manager down
    forget_jwt_authorities(tenant_a)
    before = sequence(tenant_a)

    # when the JWT authority is ensured; then the named error says the key manager is down
    with tenant_a.schema(), pytest.raises(KeyManagerUnavailable) as raised:
        services.ensure_jwt_authority()
    assert raised.value.code == "key_manager_unavailable"

    # and no row or sequence change was left behind
    with tenant_a.schema():
        assert not JwtAuthority.objects.exists()
    assert sequence(tenant_a) == before


def test_bundle_is_served_without_jwt_keys_while_the_key_manager_is_down(
    tenant_a, vault_unreachable
):
    # given a trust domain without JWT keys, and the key manager down
    forget_jwt_authorities(tenant_a)

    # when its bundle is built
    with tenant_a.schema():
        bundle = services.current_bundle()

    # then the X.509 authorities are still published, with no JWT keys yet
    assert len(bundle.x509_authorities) == 1
    assert bundle.jwt_authorities == ()


def test_bundle_of_a_trust_domain_without_jwt_keys_gains_one(tenant_a):
    # given a trust domain without JWT keys
    forget_jwt_authorities(tenant_a)
    before = sequence(tenant_a)

    # when its bundle is built
    with tenant_a.schema():
        bundle = services.current_bundle()

    # then a JWT key was created and is published under the bumped sequence
    [published] = bundle.jwt_authorities
    assert published.key_id == active_jwt_authority(tenant_a).key_id
    assert bundle.sequence == before + 1
