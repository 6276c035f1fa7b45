"""/api/v1/join-tokens and /api/v1/agents over REST, for two tenants."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.db import connection

from issuance.models import JoinToken
from tests.crosstenant import assert_not_visible_to
from tests.issuance.conftest import create_join_token

pytestmark = pytest.mark.django_db(transaction=True)


def test_join_token_is_shown_once_and_only_its_hash_is_stored(tenant_a):
    # when tenant A creates a join token with an alias
    alias = f"spiffe://{tenant_a.trust_domain}/cluster/web"
    created = create_join_token(tenant_a, ttl=120, spiffe_id=alias)

    # then the answer carries the secret once
    assert set(created) == {"id", "token", "expires_at", "spiffe_id"}
    assert created["spiffe_id"] == alias
    expires = dt.datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert (
        dt.timedelta(seconds=100) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=120)
    )
    secret = created["token"]
    assert len(secret) >= 40

    # and reading it back never shows it
    listed = tenant_a.client.get("/api/v1/join-tokens").json()
    detail = tenant_a.client.get(f"/api/v1/join-tokens/{created['id']}").json()
    assert [t["id"] for t in listed] == [created["id"]]
    assert secret not in str(listed) and secret not in str(detail)
    assert detail["used_at"] is None and detail["agent_id"] is None

    # and the database holds the SHA-256, not the secret, in any column
    with tenant_a.schema():
        row = JoinToken.objects.get(pk=created["id"])
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM issuance_jointoken")
            assert secret not in repr(cursor.fetchall())


def test_default_ttl_is_ten_minutes(tenant_a):
    created = create_join_token(tenant_a)
    expires = dt.datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=9) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=10)
    assert created["spiffe_id"] is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"ttl": 0}, "invalid_ttl"),
        ({"ttl": 8 * 24 * 3600}, "invalid_ttl"),
        ({"spiffe_id": "spiffe://elsewhere.example/node"}, "spiffe_id_outside_trust_domain"),
        ({"spiffe_id": "spiffe://{td}/Node/../x"}, "invalid_spiffe_id"),
        ({"spiffe_id": "spiffe://{td}/spire/agent/join_token/other"}, "reserved_spiffe_id"),
        ({"ttl": "long"}, "invalid_request"),
    ],
)
def test_invalid_join_token_request_is_refused_and_nothing_stored(tenant_a, body, code):
    body = {
        k: v.replace("{td}", tenant_a.trust_domain) if isinstance(v, str) else v
        for k, v in body.items()
    }
    response = tenant_a.client.post("/api/v1/join-tokens", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    with tenant_a.schema():
        assert JoinToken.objects.count() == 0


def test_another_tenant_cannot_see_or_delete_join_tokens(tenant_a, tenant_b):
    created = create_join_token(tenant_b)
    path = f"/api/v1/join-tokens/{created['id']}"
    assert tenant_a.client.get("/api/v1/join-tokens").json() == []
    assert_not_visible_to(tenant_a.client, "GET", path)
    assert_not_visible_to(tenant_a.client, "DELETE", path)
    assert tenant_b.client.get(path).status_code == 200


def test_deleted_join_token_is_gone(tenant_a):
    created = create_join_token(tenant_a)
    assert tenant_a.client.delete(f"/api/v1/join-tokens/{created['id']}").status_code == 204
    assert tenant_a.client.get("/api/v1/join-tokens").json() == []


def test_join_tokens_are_prefixed_so_a_command_line_never_reads_one_as_an_option(tenant_a):
    # when many tokens are generated (an unprefixed urlsafe token starts with "-" 1 time in 64)
    tokens = [
        tenant_a.client.post("/api/v1/join-tokens", {"ttl": 60}, format="json").json()["token"]
        for _ in range(40)
    ]

    # then every one carries the recognisable prefix, and none starts like an option
    assert all(t.startswith("hjt_") for t in tokens)
    assert len(set(tokens)) == 40
