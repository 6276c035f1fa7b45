"""The published bundle cache: rebuilt after each change, used only for its own sequence."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings

from hallmark.bundle import Bundle
from hallmark.spiffeid import TrustDomain
from tenants import events
from tests.trustdomains.changes import ChangeListener, sequence
from trustdomains import bundles, services
from trustdomains.models import JwtAuthority, X509Authority

pytestmark = pytest.mark.django_db(transaction=True)
X509 = "/api/v1/trust-domain/x509-authorities"


def cached(handle) -> dict | None:
    document = redis.Redis.from_url(settings.REDIS_URL).get(
        bundles.CACHE_KEY.format(tenant_id=handle.tenant.id)
    )
    return None if document is None else json.loads(document)


def plant(handle, *, sequence_delta: int, refresh_hint: int) -> None:
    """Put a recognisable copy of the tenant's bundle in Redis under a chosen sequence."""
    with handle.schema():
        bundle, _ = services.build_bundle()
    document = bundle.to_jwks()
    document["spiffe_sequence"] = bundle.sequence + sequence_delta
    document["spiffe_refresh_hint"] = refresh_hint
    redis.Redis.from_url(settings.REDIS_URL).set(
        bundles.CACHE_KEY.format(tenant_id=handle.tenant.id), json.dumps(document)
    )
    bundles.forget_local()


def public_bundle(api, handle) -> Bundle:
    response = api.get(f"/bundle/{handle.trust_domain}")
    assert response.status_code == 200
    return Bundle.parse(TrustDomain(handle.trust_domain), response.content)


def test_a_change_is_cached_under_its_new_sequence_before_agents_hear_of_it(tenant_a):
    # given a listener on the tenant's changes
    before, listener = sequence(tenant_a), ChangeListener(tenant_a.tenant.id)
    try:
        # when a CA is prepared
        prepared = tenant_a.client.post(f"{X509}/prepare", format="json").json()
        kinds = listener.kinds(wait=1)
    finally:
        listener.close()

    # then Redis holds the rebuilt bundle of the new sequence, with the prepared CA in it
    assert kinds == ["bundle"]
    document = cached(tenant_a)
    assert document is not None and document["spiffe_sequence"] == before + 1
    bundle = Bundle.parse(TrustDomain(tenant_a.trust_domain), document)
    with tenant_a.schema():
        ca = X509Authority.objects.get(id=prepared["id"]).certificate
    assert ca in bundle.x509_authorities


def test_readers_take_the_cached_bundle_of_the_current_sequence_only(tenant_a, api):
    # given a marked copy cached under the current sequence
    plant(tenant_a, sequence_delta=0, refresh_hint=4242)

    # then the public endpoint serves it (the cache is what readers use)
    assert public_bundle(api, tenant_a).refresh_hint == 4242

    # given a marked copy under an older sequence
    plant(tenant_a, sequence_delta=-1, refresh_hint=4343)

    # then it is never served: the bundle is rebuilt from the journal and cached again
    served = public_bundle(api, tenant_a)
    assert served.refresh_hint != 4343 and served.sequence == sequence(tenant_a)
    assert cached(tenant_a)["spiffe_refresh_hint"] == served.refresh_hint


def test_each_tenant_is_served_its_own_bundle_from_the_cache(tenant_a, tenant_b, api):
    # given both tenants' bundles cached
    first_a, first_b = public_bundle(api, tenant_a), public_bundle(api, tenant_b)

    # when they are read again (from the cache)
    again_a, again_b = public_bundle(api, tenant_a), public_bundle(api, tenant_b)

    # then each is its own trust domain's, with its own CA only
    assert again_a == first_a and again_b == first_b
    assert again_a.trust_domain.name == tenant_a.trust_domain
    assert again_b.trust_domain.name == tenant_b.trust_domain
    assert not set(again_a.x509_authorities) & set(again_b.x509_authorities)
    with tenant_b.schema():
        b_ca = X509Authority.objects.get(status="active").certificate
    assert again_b.x509_authorities == (b_ca,)


def test_a_bundle_missing_its_jwt_keys_is_served_but_not_cached(tenant_a, settings):
    # given a trust domain without JWT keys (and nothing cached) while the key manager is down
    with tenant_a.schema():
        JwtAuthority.objects.all().delete()
    redis.Redis.from_url(settings.REDIS_URL).delete(
        bundles.CACHE_KEY.format(tenant_id=tenant_a.tenant.id)
    )
    bundles.forget_local()
    from trustdomains.keymanagers import reset_key_managers

    address = settings.VAULT_ADDR
    settings.VAULT_ADDR = "http://127.0.0.1:9"
    reset_key_managers()
    try:
        with tenant_a.schema():
            degraded = services.current_bundle()
    finally:
        settings.VAULT_ADDR = address
        reset_key_managers()

    # then it was served without JWT keys and not cached
    assert degraded.jwt_authorities == ()
    assert cached(tenant_a) is None

    # when the key manager is back, the next reader gets (and caches) the complete bundle
    with tenant_a.schema():
        complete = services.current_bundle()
    assert len(complete.jwt_authorities) == 1
    assert cached(tenant_a)["spiffe_sequence"] == complete.sequence


def test_the_bundle_is_served_while_redis_is_down(tenant_a, api, monkeypatch):
    # given Redis unreachable for this process (a real client to a closed port)
    public_bundle(api, tenant_a)
    bundles.forget_local()
    monkeypatch.setattr(
        events, "_client", redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=1)
    )

    # when the bundle is read, then it is built from the journal and served all the same
    served = public_bundle(api, tenant_a)
    with tenant_a.schema():
        ca = X509Authority.objects.get(status="active").certificate
    assert served.x509_authorities == (ca,) and served.sequence == sequence(tenant_a)
