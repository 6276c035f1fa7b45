"""Signup against abuse: per-client rate limit, reserved trust domains, no account oracle."""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.response import Response

from tenants import ratelimit, signupgate
from tenants.models import ApiToken, Membership, Tenant

PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.django_db(transaction=True)


def _address() -> str:
    """A client address of its own (TEST-NET-2), so counters of other tests do not interfere."""
    address = f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"
    redis.Redis.from_url(_redis_url()).delete(ratelimit.KEY.format(scope="signup", client=address))
    return address


def _redis_url() -> str:
    from django.conf import settings

    return settings.REDIS_URL


def _body(**overrides: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    body = {
        "name": f"Abuse {suffix}",
        "trust_domain": f"abuse-{suffix}.test",
        "email": f"ops-{suffix}@abuse.test",
        "password": PASSWORD,
    }
    body.update(overrides)
    return body


def _signup(api, body: dict[str, str], address: str = "127.0.0.1", **extra: str):
    return api.post("/api/v1/signup", body, format="json", REMOTE_ADDR=address, **extra)


def test_signups_past_the_limit_from_one_address_are_429_with_retry_after(api, settings) -> None:
    # given a limit of two attempts an hour, and two attempts (bad ones count too)
    settings.SIGNUP_RATE_LIMIT = "2/3600"
    address = _address()
    assert _signup(api, _body(password="short"), address).status_code == 400
    assert _signup(api, _body(trust_domain="Bad!"), address).status_code == 400
    tenants = Tenant.objects.count()

    # when the same address tries a third time, even with a good body
    response = _signup(api, _body(), address)

    # then it is refused with a code and a time to come back, and nothing is made
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "rate_limited"
    assert 0 < int(response["Retry-After"]) <= 3600
    assert Tenant.objects.count() == tenants


def test_a_refused_signup_is_answered_before_drf_with_one_log_line_a_window(
    api, settings, caplog
) -> None:
    # given an address at its limit
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    address = _address()
    assert _signup(api, _body(password="short"), address).status_code == 400
    caplog.set_level(logging.INFO)

    # when it sends five more, one of them not even JSON
    answers = [_signup(api, _body(), address) for _ in range(4)]
    answers.append(
        api.generic("POST", "/api/v1/signup", b"{not json", "application/json", REMOTE_ADDR=address)
    )

    # then each is 429 rate_limited with Retry-After, answered by the middleware (a plain
    # Django answer: DRF, sessions, CSRF and the view never ran), and logged once
    for answer in answers:
        assert answer.status_code == 429
        assert answer.json()["code"] == "rate_limited"
        assert 0 < int(answer["Retry-After"]) <= 3600
        assert not isinstance(answer, Response)
        assert "Set-Cookie" not in answer
    logged = [r for r in caplog.records if address in r.getMessage()]
    assert len(logged) == 1
    assert not [r for r in caplog.records if "Too Many Requests" in r.getMessage()]


def test_the_count_is_kept_in_redis_so_every_web_replica_sees_it(api, settings) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    address = _address()
    _signup(api, _body(password="short"), address)

    # a second replica is a second process with its own Redis connection: it reads the count
    other_replica = redis.Redis.from_url(_redis_url())
    key = ratelimit.KEY.format(scope="signup", client=address)
    assert int(other_replica.get(key)) == 1
    assert 0 < other_replica.ttl(key) <= 3600


def test_another_address_is_not_limited_by_the_first(api, settings) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    first, second = _address(), _address()
    _signup(api, _body(password="short"), first)
    assert _signup(api, _body(password="short"), first).status_code == 429

    assert _signup(api, _body(password="short"), second).status_code == 400


def test_ipv6_clients_are_counted_per_64_block(api, settings) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    block = f"2001:db8:{random.randrange(65536):x}:{random.randrange(65536):x}"
    redis.Redis.from_url(_redis_url()).delete(
        ratelimit.KEY.format(scope="signup", client=f"{block}::/64")
    )
    _signup(api, _body(password="short"), f"{block}::1")

    assert _signup(api, _body(password="short"), f"{block}::2").status_code == 429


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(api, settings) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    address = _address()
    _signup(api, _body(password="short"), address)

    # a client cannot pick a fresh address by sending the header itself
    spoofed = _signup(api, _body(password="short"), address, HTTP_X_FORWARDED_FOR=_address())
    assert spoofed.status_code == 429

    # behind one trusted proxy, the address that proxy saw is the client
    settings.TRUSTED_PROXY_COUNT = 1
    behind = _signup(api, _body(password="short"), address, HTTP_X_FORWARDED_FOR=_address())
    assert behind.status_code == 400


def test_signup_is_refused_when_the_limiter_cannot_count(api, monkeypatch) -> None:
    closed = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    monkeypatch.setattr(ratelimit, "shared_redis", lambda: closed)
    tenants = Tenant.objects.count()

    response = _signup(api, _body(), _address())

    assert response.status_code == 503
    assert response.json()["code"] == "rate_limiter_unavailable"
    assert Tenant.objects.count() == tenants


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "api.localhost",
        "127.0.0.1",
        "10.1.2.3",
        "127.1",
        "2130706433",
        "0x7f000001",
        "hallmark.example.com",
        "tenant.hallmark.example.com",
        "agents.example.net",
        "corp.example",
        "x.corp.example",
        "bank.test",
        "acme.tenants.hallmark.local",
    ],
)
def test_a_reserved_trust_domain_is_400_and_nothing_is_stored(api, settings, name) -> None:
    # given the platform's public names and an operator's list
    settings.HTTP_PUBLIC_URL = "https://Hallmark.Example.com:443/"
    settings.AGENT_ENDPOINT = "agents.example.net:8081"
    settings.RESERVED_TRUST_DOMAINS = ["*.corp.example", "bank.test"]
    tenants = Tenant.objects.count()

    response = _signup(api, _body(trust_domain=name), _address())

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "trust_domain_reserved"
    assert Tenant.objects.count() == tenants


@pytest.mark.parametrize("name", ["example.com", "hallmark.example.org", "localhost-corp.test"])
def test_names_near_reserved_ones_are_not_reserved(settings, name) -> None:
    from tenants.reserved import is_reserved

    settings.HTTP_PUBLIC_URL = "https://hallmark.example.com"
    settings.RESERVED_TRUST_DOMAINS = ["*.corp.example"]
    assert not is_reserved(name)


def test_a_taken_email_answers_as_a_fresh_one_and_leaves_the_account_alone(api) -> None:
    # given an account that signed up with its own password
    email = f"victim-{uuid.uuid4().hex[:6]}@abuse.test"
    first = _signup(api, _body(email=email), _address())
    assert first.status_code == 201
    victim = get_user_model().objects.get(username=email)

    # when a stranger signs up with that email and another password, and someone with a
    # fresh email signs up too
    taken = _signup(api, _body(email=email, password="another long password"), _address())
    fresh = _signup(api, _body(), _address())

    # then both answers look the same: nothing tells that the email had an account
    assert (taken.status_code, fresh.status_code) == (201, 201)
    assert set(taken.json()) == set(fresh.json())
    assert set(taken.json()["tenant"]) == set(fresh.json()["tenant"])
    # and the account is untouched: same password, member of its own tenant only
    victim.refresh_from_db()
    assert victim.check_password(PASSWORD)
    assert list(Membership.objects.filter(user=victim).values_list("tenant__slug", flat=True)) == [
        first.json()["tenant"]["slug"]
    ]
    new_tenant = Tenant.objects.get(id=taken.json()["tenant"]["id"])
    assert not Membership.objects.filter(tenant=new_tenant).exists()
    assert ApiToken.objects.filter(tenant=new_tenant).count() == 1


def test_the_accounts_owner_signing_up_again_owns_both_tenants(api) -> None:
    email = f"owner-{uuid.uuid4().hex[:6]}@abuse.test"
    first = _signup(api, _body(email=email), _address())

    second = _signup(api, _body(email=email), _address())

    assert second.status_code == 201
    owned = set(
        Membership.objects.filter(user__username=email, role="owner").values_list(
            "tenant_id", flat=True
        )
    )
    assert {str(t) for t in owned} == {first.json()["tenant"]["id"], second.json()["tenant"]["id"]}


def test_the_slug_is_chosen_in_one_query_however_many_tenants_share_the_name() -> None:
    from tenants.services import _unique_slug

    # given tenants whose slugs take the name and its first suffixes (rows only)
    base = f"crowd-{uuid.uuid4().hex[:6]}"
    for slug in (base, f"{base}-2", f"{base}-3", f"{base}x"):
        Tenant.objects.create(
            slug=slug, name=slug, trust_domain=f"{slug}.test", schema_name=f"t_{slug}"[:63]
        )

    with CaptureQueriesContext(connection) as queries:
        slug = _unique_slug(base)

    assert slug == f"{base}-4"
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert len(selects) == 1, selects


@contextlib.contextmanager
def _all_signup_slots_taken(slots: int) -> Iterator[None]:
    """Another database session (another web replica, say) holds every signup slot."""
    import psycopg
    from django.db import connection as django_connection

    params = django_connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:
        for slot in range(slots):
            other.execute("SELECT pg_advisory_lock(%s, %s)", [signupgate.LOCK_CLASS, slot])
        yield
        # Given back before the block ends: closing the connection alone frees the slots only
        # once its backend has exited, after the caller's next signup may have looked.
        other.execute("SELECT pg_advisory_unlock_all()")


def test_a_signup_while_every_slot_is_taken_is_503_busy_before_its_body_is_read(
    api, settings
) -> None:
    settings.SIGNUP_CONCURRENCY = 2
    settings.SIGNUP_WAIT_SECONDS = 0
    tenants, address = Tenant.objects.count(), _address()
    with _all_signup_slots_taken(2):
        # when signups arrive, one of them not even JSON
        busy = _signup(api, _body(), address)
        garbled = api.post(
            "/api/v1/signup", "{not json", content_type="application/json", REMOTE_ADDR=address
        )
    # then both are 503 busy with Retry-After (the garbled one too: its body was never read)
    for answer in (busy, garbled):
        assert answer.status_code == 503, answer.content
        assert answer.json()["code"] == "busy"
        assert int(answer["Retry-After"]) >= 1
    assert Tenant.objects.count() == tenants
    # and once a slot is free, a signup is provisioned
    made = _signup(api, _body(), address)
    assert made.status_code == 201, made.content
    assert Tenant.objects.count() == tenants + 1


def test_a_busy_answer_counts_against_the_address_rate_limit(api, settings) -> None:
    settings.SIGNUP_RATE_LIMIT = "2/3600"
    settings.SIGNUP_WAIT_SECONDS = 0
    address = _address()
    with _all_signup_slots_taken(settings.SIGNUP_CONCURRENCY):
        answers = [_signup(api, _body(), address).status_code for _ in range(2)]
    assert answers == [503, 503]
    # every attempt counts: a flood retrying on busy spends its allowance on refusals
    assert _signup(api, _body(), address).status_code == 429


def test_the_view_takes_a_slot_when_the_middleware_is_not_installed(api, settings) -> None:
    settings.MIDDLEWARE = [
        m for m in settings.MIDDLEWARE if m != "tenants.ratelimit.SignupRateLimitMiddleware"
    ]
    settings.SIGNUP_WAIT_SECONDS = 0
    with _all_signup_slots_taken(settings.SIGNUP_CONCURRENCY):
        answer = _signup(api, _body(), _address())
    assert answer.status_code == 503 and answer.json()["code"] == "busy"
    assert int(answer["Retry-After"]) >= 1
