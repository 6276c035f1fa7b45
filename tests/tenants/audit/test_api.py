"""`GET /api/v1/audit-events` (filters, cursor, exports), `/verify`, the operator route, and
request ids: two tenants on every path."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tenants.services import record_audit
from tests.tenants.audit.conftest import chain_ids, sql

pytestmark = pytest.mark.django_db(transaction=True)


def _events(tenant, actions: list[str], outcome: str = "success") -> None:  # type: ignore[no-untyped-def]
    for i, action in enumerate(actions):
        record_audit(
            tenant=tenant,
            actor=f"user:{tenant.slug}",
            action=action,
            target=str(i),
            outcome=outcome,
        )


def _everything(client, path: str = "/api/v1/audit-events", **params: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every page, following next_cursor."""
    rows: list[dict] = []
    cursor = None
    while True:
        answer = client.get(path, {**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.content
        body = answer.json()
        rows += body["results"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


def test_listing_pages_newest_first_with_the_chain_fields(tenant_a, tenant_b) -> None:
    # given seven events of A's and some of B's
    _events(tenant_a.tenant, [f"a.{i}" for i in range(7)])
    _events(tenant_b.tenant, ["b.secret"])

    # when A pages through its trail three at a time
    rows = _everything(tenant_a.client, page_size="3")

    # then it sees all of its own, newest first, each with its link of the chain
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert len({r["id"] for r in rows}) == len(rows) == len(chain_ids(tenant_a.tenant))
    assert {"id", "at", "actor", "action", "target", "outcome", "source", "detail"} <= set(rows[0])
    assert len(rows[0]["hash"]) == 64 and len(rows[0]["prev_hash"]) == 64
    assert rows[0]["prev_hash"] == rows[1]["hash"]
    # and none of B's
    assert not [r for r in rows if r["action"].startswith("b.")]
    assert all(r["action"] != "a.0" for r in _everything(tenant_b.client))


def test_filters_narrow_the_listing(tenant_a, tenant_b) -> None:
    _events(tenant_a.tenant, ["entry.create", "entry.delete", "entry.create"])
    _events(tenant_a.tenant, ["entry.create"], outcome="denied")
    _events(tenant_b.tenant, ["entry.create"])
    client = tenant_a.client

    created = _everything(client, action="entry.create")
    assert len(created) == 3 and {r["action"] for r in created} == {"entry.create"}
    denied = _everything(client, outcome="denied")
    assert [r["outcome"] for r in denied] == ["denied"]
    mine = _everything(client, actor=f"user:{tenant_a.tenant.slug}")
    assert len(mine) == 4
    assert _everything(client, actor=f"user:{tenant_b.tenant.slug}") == []
    newest = created[0]["at"]
    assert _everything(client, action="entry.create", since=newest)[0]["id"] == created[0]["id"]
    assert created[0]["id"] not in {r["id"] for r in _everything(client, until=newest)}


BAD_PARAMETERS = [
    ({"since": "yesterday"}, "invalid_filter"),
    ({"until": "2026-13-40T00:00:00Z"}, "invalid_filter"),
    ({"since": "2026-11-30T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "invalid_filter"),
    ({"action": "x" * 101}, "invalid_filter"),
    ({"outcome": ""}, "invalid_filter"),
    ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ({"cursor": "djE6LTE"}, "invalid_cursor"),  # "v1:-1"
    ({"page_size": "0"}, "invalid_page_size"),
    ({"page_size": "1001"}, "invalid_page_size"),
    ({"page_size": "ten"}, "invalid_page_size"),
    ({"format": "xml"}, "invalid_format"),
]


def test_bad_listing_parameters_answer_400_with_a_code(tenant_a) -> None:
    for params, code in BAD_PARAMETERS:
        for path in ("/api/v1/audit-events",):
            answer = tenant_a.client.get(path, params)
            assert answer.status_code == 400, (params, answer.content)
            assert answer.json()["code"] == code, params


def test_exports_stream_the_tenants_trail_only(tenant_a, tenant_b) -> None:
    _events(tenant_a.tenant, ["a.one", "=cmd|' /C calc'!A0"])
    _events(tenant_b.tenant, ["b.secret"])

    # JSON lines: one object a line, A's events only
    answer = tenant_a.client.get("/api/v1/audit-events", {"format": "jsonl"})
    assert answer.status_code == 200 and answer.streaming
    assert answer["Content-Type"] == "application/jsonl"
    lines = [json.loads(line) for line in b"".join(answer.streaming_content).splitlines()]
    assert len(lines) == len(chain_ids(tenant_a.tenant))
    assert not [r for r in lines if r["action"] == "b.secret"]

    # CSV: a header, then the same rows; a cell that a spreadsheet would run is defused
    answer = tenant_a.client.get("/api/v1/audit-events", {"format": "csv", "action": "a.one"})
    assert answer.status_code == 200 and answer.streaming
    table = list(csv.reader(io.StringIO(b"".join(answer.streaming_content).decode())))
    assert table[0][:3] == ["id", "tenant", "sequence"]
    assert [row[table[0].index("action")] for row in table[1:]] == ["a.one"]
    formula = tenant_a.client.get("/api/v1/audit-events", {"format": "csv", "outcome": "success"})
    assert "'=cmd" in b"".join(formula.streaming_content).decode()

    # and B's export has none of A's
    answer = tenant_b.client.get("/api/v1/audit-events", {"format": "jsonl"})
    actions = {json.loads(x)["action"] for x in b"".join(answer.streaming_content).splitlines()}
    assert "a.one" not in actions and "b.secret" in actions


def test_verify_answers_for_the_callers_chain_only(tenant_a, tenant_b) -> None:
    # given both trails; when B's is tampered with
    _events(tenant_a.tenant, ["a.one", "a.two"])
    _events(tenant_b.tenant, ["b.one", "b.two"])
    bad = chain_ids(tenant_b.tenant)[-1]
    sql("UPDATE audit_auditevent SET outcome = 'failure' WHERE id = %s", [bad])

    # then A's verifies, and B's names the changed event
    mine = tenant_a.client.get("/api/v1/audit-events/verify").json()
    assert mine["valid"] is True
    assert mine["events"] == len(chain_ids(tenant_a.tenant))
    assert len(mine["head_hash"]) == 64
    theirs = tenant_b.client.get("/api/v1/audit-events/verify").json()
    assert theirs["valid"] is False
    assert theirs["first_invalid_id"] == bad and theirs["reason"] == "hash_mismatch"


def test_the_operator_trail_refuses_tenant_tokens_and_anonymous_callers(tenant_a, api) -> None:
    answer = tenant_a.client.get("/api/v1/operator/audit-events")
    assert answer.status_code == 403 and answer.json()["code"] == "permission_denied"
    answer = tenant_a.client.get("/api/v1/operator/audit-events", {"format": "jsonl"})
    assert answer.status_code == 403
    assert api.get("/api/v1/operator/audit-events").status_code == 401
    assert api.get("/api/v1/audit-events").status_code == 401
    assert api.get("/api/v1/audit-events/verify").status_code == 401


def test_the_request_id_is_echoed_and_recorded_on_the_event(tenant_a) -> None:
    # given a caller's own request id; when it registers an entry
    body = {
        "spiffe_id": f"spiffe://{tenant_a.trust_domain}/w",
        "parent_id": f"spiffe://{tenant_a.trust_domain}/n",
        "selectors": ["unix:uid:1"],
    }
    answer = tenant_a.client.post(
        "/api/v1/entries", body, format="json", HTTP_X_REQUEST_ID="deploy-42.step:7"
    )
    assert answer.status_code == 201, answer.content

    # then the answer echoes it and the audit event carries it, with the source address
    assert answer["X-Request-Id"] == "deploy-42.step:7"
    rows = _everything(tenant_a.client, action="entry.create")
    assert rows[0]["request_id"] == "deploy-42.step:7"
    assert rows[0]["source"] == "127.0.0.1"


def test_an_unusable_request_id_is_replaced_by_a_fresh_one(tenant_a) -> None:
    for inbound in ["", "has spaces", "x" * 200, "<script>", "a;b=c"]:
        answer = tenant_a.client.get("/api/v1/trust-domain", HTTP_X_REQUEST_ID=inbound)
        fresh = answer["X-Request-Id"]
        assert fresh != inbound and len(fresh) == 32 and fresh.isalnum()
