"""/api/v1/entries: CRUD, validation that leaves nothing stored, revisions, two tenants."""

from __future__ import annotations

import datetime as dt

import pytest

from issuance.models import Entry
from tenants.models import AuditEvent
from tests.crosstenant import assert_not_visible_to
from tests.issuance.conftest import create_entry, entry_body

pytestmark = pytest.mark.django_db(transaction=True)


def stored_entries(handle) -> int:
    with handle.schema():
        return Entry.objects.count()


def test_create_entry_answers_the_entry_with_id_revision_and_defaults(tenant_a):
    # when tenant A registers a workload
    response = tenant_a.client.post(
        "/api/v1/entries",
        entry_body(
            tenant_a,
            selectors=["unix:uid:1000", "unix:gid:50", "unix:uid:1000"],
            dns_names=["Web.Example.com"],
        ),
        format="json",
    )

    # then the entry comes back normalised, with SPIRE's default TTLs and revision 1
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["spiffe_id"] == f"spiffe://{tenant_a.trust_domain}/web"
    assert body["selectors"] == ["unix:gid:50", "unix:uid:1000"]
    assert body["dns_names"] == ["web.example.com"]
    assert body["x509_svid_ttl"] == 3600
    assert body["jwt_svid_ttl"] == 300
    assert body["revision"] == 1
    assert body["expires_at"] is None
    assert tenant_a.client.get(f"/api/v1/entries/{body['id']}").json() == body
    assert [e["id"] for e in tenant_a.client.get("/api/v1/entries").json()] == [body["id"]]
    assert AuditEvent.objects.filter(action="entry.create", target=body["id"]).count() == 1


def test_similar_entry_is_refused_with_entry_exists(tenant_a):
    # given an entry
    create_entry(tenant_a, selectors=["unix:uid:1000", "unix:gid:1"])

    # when the same spiffe_id, parent_id and selectors (in another order) are registered again
    response = tenant_a.client.post(
        "/api/v1/entries",
        entry_body(tenant_a, selectors=["unix:gid:1", "unix:uid:1000"], x509_svid_ttl=60),
        format="json",
    )

    # then 409 entry_exists and still one entry
    assert response.status_code == 409
    assert response.json()["code"] == "entry_exists"
    assert stored_entries(tenant_a) == 1


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("spiffe_id", "spiffe://{td}/Web/../x", "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://{TD}/web", "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://{td}:8443/web", "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://admin@{td}/web", "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://{td}/a/../b", "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://{td}/a//b", "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://{td}/a/", "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://{td}/" + "a" * 2048, "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://{td}", "invalid_spiffe_id"),
        ("spiffe_id", "spiffe://other.example/web", "spiffe_id_outside_trust_domain"),
        ("spiffe_id", "spiffe://{td}/spire/server", "reserved_spiffe_id"),
        ("spiffe_id", "https://{td}/web", "invalid_spiffe_id"),
        ("parent_id", "spiffe://other.example/spire/agent/x", "spiffe_id_outside_trust_domain"),
        ("parent_id", "spiffe://{td}/agent%20x", "invalid_spiffe_id"),
        ("selectors", [], "invalid_selector"),
        ("selectors", ["unix"], "invalid_selector"),
        ("selectors", ["Unix:uid:1"], "invalid_selector"),
        ("selectors", ["unix:"], "invalid_selector"),
        ("x509_svid_ttl", -1, "invalid_ttl"),
        ("x509_svid_ttl", 10**7, "invalid_ttl"),
        ("jwt_svid_ttl", 86401, "invalid_ttl"),
        ("dns_names", ["bad_name.example"], "invalid_dns_name"),
        ("dns_names", ["-x.example"], "invalid_dns_name"),
        ("dns_names", ["{td}"], "reserved_dns_name"),
        ("federates_with", ["Bad.Example"], "invalid_trust_domain"),
        ("federates_with", ["{td}"], "invalid_trust_domain"),
        ("expires_at", "2001-01-01T00:00:00Z", "invalid_expiry"),
    ],
)
def test_invalid_entry_is_refused_with_a_code_and_nothing_stored(tenant_a, field, value, code):
    # given a body with one bad field
    def fill(v):
        if isinstance(v, str):
            return v.replace("{td}", tenant_a.trust_domain).replace(
                "{TD}", tenant_a.trust_domain.upper()
            )
        if isinstance(v, list):
            return [fill(x) for x in v]
        return v

    body = entry_body(tenant_a, **{field: fill(value)})
    audit_before = AuditEvent.objects.count()

    # when it is posted
    response = tenant_a.client.post("/api/v1/entries", body, format="json")

    # then 400 with the stable code, and nothing was stored or audited as a change
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code, response.json()
    assert stored_entries(tenant_a) == 0
    assert AuditEvent.objects.count() == audit_before


def test_wrong_json_types_are_invalid_request(tenant_a):
    response = tenant_a.client.post(
        "/api/v1/entries",
        entry_body(tenant_a, selectors="unix:uid:1", x509_svid_ttl="soon"),
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert stored_entries(tenant_a) == 0


def test_patch_changes_fields_and_bumps_the_revision(tenant_a):
    # given an entry at revision 1
    entry = create_entry(tenant_a)

    # when it is patched twice
    first = tenant_a.client.patch(
        f"/api/v1/entries/{entry['id']}", {"x509_svid_ttl": 600}, format="json"
    )
    second = tenant_a.client.patch(
        f"/api/v1/entries/{entry['id']}",
        {"selectors": ["unix:uid:2000"], "hint": "web"},
        format="json",
    )

    # then each change is applied and the revision goes up by one each time
    assert first.status_code == 200 and first.json()["revision"] == 2
    assert first.json()["x509_svid_ttl"] == 600
    assert second.status_code == 200
    assert second.json()["revision"] == 3
    assert second.json()["selectors"] == ["unix:uid:2000"]
    assert second.json()["x509_svid_ttl"] == 600
    assert second.json()["hint"] == "web"


def test_invalid_patch_changes_nothing(tenant_a):
    # given an entry
    entry = create_entry(tenant_a)

    # when a patch moves it out of the trust domain
    response = tenant_a.client.patch(
        f"/api/v1/entries/{entry['id']}",
        {"spiffe_id": "spiffe://elsewhere.example/web", "hint": "changed"},
        format="json",
    )

    # then 400 and the entry is exactly as before
    assert response.status_code == 400
    assert response.json()["code"] == "spiffe_id_outside_trust_domain"
    assert tenant_a.client.get(f"/api/v1/entries/{entry['id']}").json() == entry


def test_patch_into_a_similar_entry_is_refused(tenant_a):
    create_entry(tenant_a, "/one")
    two = create_entry(tenant_a, "/two")
    response = tenant_a.client.patch(
        f"/api/v1/entries/{two['id']}",
        {"spiffe_id": f"spiffe://{tenant_a.trust_domain}/one"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "entry_exists"
    assert tenant_a.client.get(f"/api/v1/entries/{two['id']}").json() == two


def test_expires_at_in_the_future_is_kept(tenant_a):
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    entry = create_entry(tenant_a, expires_at=when.isoformat())
    assert dt.datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00")) == when


def test_delete_removes_the_entry(tenant_a):
    entry = create_entry(tenant_a)
    assert tenant_a.client.delete(f"/api/v1/entries/{entry['id']}").status_code == 204
    assert tenant_a.client.get(f"/api/v1/entries/{entry['id']}").status_code == 404
    assert stored_entries(tenant_a) == 0
    assert AuditEvent.objects.filter(action="entry.delete", target=entry["id"]).count() == 1


def test_another_tenant_cannot_list_read_change_or_delete_entries(tenant_a, tenant_b):
    # given an entry of tenant B
    entry = create_entry(tenant_b)
    path = f"/api/v1/entries/{entry['id']}"

    # then tenant A sees nothing of it
    assert tenant_a.client.get("/api/v1/entries").json() == []
    assert_not_visible_to(tenant_a.client, "GET", path)
    assert_not_visible_to(tenant_a.client, "PATCH", path, {"hint": "mine now"})
    assert_not_visible_to(tenant_a.client, "DELETE", path)

    # and B's entry is untouched
    assert tenant_b.client.get(path).json() == entry


def test_entries_need_a_token(api):
    response = api.get("/api/v1/entries")
    assert response.status_code in (401, 403)


def test_openapi_schema_describes_the_issuance_resources(tenant_a):
    response = tenant_a.client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/entries",
        "/api/v1/entries/{id}",
        "/api/v1/join-tokens",
        "/api/v1/agents",
        "/api/v1/agents/{id}/ban",
    ):
        assert path in paths, sorted(paths)
