"""Usage, invoices, audit verify/export, federation warnings and the operator's usage, billing,
audit trail and health pages, in process with two tenants (the browser tests drive the same
pages in Chromium)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import os

import pytest
from django.test import Client

from console.charts import daily_chart
from tenants import members, operators
from tenants.billing import services as billing
from tenants.metering.models import DailyUsage
from tenants.models import AuditEvent, Membership, Tenant
from tests.conftest import TenantHandle

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("seeded_plans")]

PASSWORD = "correct horse battery staple"
LAST_MONTH = (dt.datetime.now(tz=dt.UTC).date().replace(day=1) - dt.timedelta(days=1)).strftime(
    "%Y-%m"
)


def _owner(handle: TenantHandle) -> Client:
    client = Client()
    email = Membership.objects.get(tenant=handle.tenant, role="owner").user.username
    assert client.post("/login", {"email": email, "password": PASSWORD}).status_code == 302
    return client


def _member(handle: TenantHandle, role: str) -> Client:
    email = f"{role}@{handle.trust_domain}"
    made = members.invite(tenant=handle.tenant, email=email, role=role, actor="test")
    members.accept_invitation(token=made.token, password=PASSWORD)
    client = Client()
    assert client.post("/login", {"email": email, "password": PASSWORD}).status_code == 302
    return client


def _operator(email: str = "ops@platform.test") -> Client:
    operators.create_operator(email=email, password=PASSWORD)
    client = Client()
    assert client.post("/operator/login", {"email": email, "password": PASSWORD}).status_code == 302
    return client


def _count(handle: TenantHandle, day: dt.date, value: int) -> None:
    DailyUsage.objects.create(
        tenant=handle.tenant, date=day, metric="x509_svids_issued", value=value
    )


# -- charts (plain Python) ---------------------------------------------------------------


def test_a_chart_holds_a_value_a_day_its_total_and_its_highest_day() -> None:
    days = [{"date": f"2026-11-0{n}", "x509_svids_issued": v} for n, v in ((1, 0), (2, 3), (3, 7))]
    days.append({"date": "2026-11-04"})  # a day nothing was counted

    chart = daily_chart("x509_svids_issued", "X.509", days)
    peaked = daily_chart("x509_svids_issued", "X.509", days, total=99)

    assert (chart.peak, chart.total, peaked.total) == (7, 10, 99)
    assert chart.series == {
        "title": "X.509",
        "dates": ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"],
        "values": [0, 3, 7, 0],
    }
    assert (chart.first_date, chart.last_date) == ("2026-11-01", "2026-11-04")
    empty = daily_chart("x509_svids_issued", "X.509", [])
    assert (empty.total, empty.peak, empty.first_date, empty.series["values"]) == (0, 0, "", [])


def test_the_platform_summary_adds_up_to_every_tenants_own_usage(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    from tenants.metering import counters, services
    from tenants.metering.models import GaugeSample

    today = dt.datetime.now(tz=dt.UTC).date()
    first, last = today - dt.timedelta(days=3), today
    for handle, scale in ((tenant_a, 1), (tenant_b, 10)):
        _count(handle, today - dt.timedelta(days=1), 3 * scale)
        counters.count(handle.tenant.pk, "jwt_svids_issued", 2 * scale)  # unstored, in Redis
        for day, hour, agents, entries in ((1, 3, 2, 5), (1, 9, 4, 6), (0, 1, 1, 7)):
            GaugeSample.objects.create(
                tenant=handle.tenant,
                hour=dt.datetime.combine(
                    today - dt.timedelta(days=day), dt.time(hour), tzinfo=dt.UTC
                ),
                agents_active=agents * scale,
                entries=entries * scale,
            )

    summary = services.platform_summary(first, last)
    each = services.all_usage(first, last)

    by_id = {t["tenant"]["id"]: t for t in each["tenants"]}
    for row in summary["tenants"]:
        assert row["totals"] == by_id[row["tenant"]["id"]]["totals"]
    for n, day in enumerate(summary["days"]):
        for metric in services.METRICS:
            if metric in ("entries", "federation_relationships"):
                continue  # charted per tenant only (a last sample, not a sum)
            assert day[metric] == sum(t["days"][n][metric] for t in each["tenants"]), metric
    yesterday = summary["days"][-2]
    assert (yesterday["x509_svids_issued"], yesterday["agents_active"]) == (33, 44)


# -- the tenant console ------------------------------------------------------------------


def test_the_usage_page_charts_the_tenants_own_days_only(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    today = dt.datetime.now(tz=dt.UTC).date()
    _count(tenant_a, today - dt.timedelta(days=1), 41)
    _count(tenant_b, today - dt.timedelta(days=1), 9999)

    answer = _owner(tenant_a).get(f"/console/{tenant_a.tenant.slug}/usage/")
    bad = _owner(tenant_a).get(f"/console/{tenant_a.tenant.slug}/usage/?from=2026-13-01")

    assert answer.status_code == 200
    body = answer.content.decode()
    assert body.count('<canvas class="chart-canvas"') == 6
    assert f"<tr><td>{today - dt.timedelta(days=1)}</td><td>41</td></tr>" in body
    assert body.count('<script id="chart-') == 6  # each chart's figures for Chart.js
    assert "9999" not in body
    assert bad.status_code == 400 and "invalid_date" in bad.content.decode()


def test_invoices_are_listed_and_downloaded_and_another_tenants_answers_404(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    closed = billing.close_period(period=LAST_MONTH, actor="operator:test")
    by_tenant = {i.tenant_id: i for i in closed["invoices"]}
    mine, theirs = by_tenant[tenant_a.tenant.pk], by_tenant[tenant_b.tenant.pk]
    owner = _owner(tenant_a)
    base = f"/console/{tenant_a.tenant.slug}/invoices/"

    listing = owner.get(base)
    pdf = owner.get(f"{base}{mine.id}.pdf")
    rows = list(csv.reader(io.StringIO(owner.get(f"{base}{mine.id}.csv").content.decode())))
    shown = json.loads(owner.get(f"{base}{mine.id}.json").content)
    other = owner.get(f"{base}{theirs.id}.pdf")

    assert listing.status_code == 200 and LAST_MONTH in listing.content.decode()
    assert f"{mine.id}.pdf" in listing.content.decode()
    assert str(theirs.id) not in listing.content.decode()
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert rows[0][0] == "invoice" and shown["id"] == str(mine.id)
    assert other.status_code == 404


def test_roles_see_only_their_pages_and_the_server_refuses_the_rest(
    tenant_a: TenantHandle,
) -> None:
    slug = tenant_a.tenant.slug
    auditor, viewer = _member(tenant_a, "auditor"), _member(tenant_a, "viewer")

    audit_page = auditor.get(f"/console/{slug}/audit/")
    viewer_page = viewer.get(f"/console/{slug}/usage/")

    nav = audit_page.content.decode()
    assert f'href="/console/{slug}/usage/"' in nav
    assert f'href="/console/{slug}/invoices/"' not in nav  # an auditor reads no billing
    assert auditor.get(f"/console/{slug}/invoices/").status_code == 403
    assert f'href="/console/{slug}/invoices/"' in viewer_page.content.decode()
    assert f'href="/console/{slug}/audit/"' not in viewer_page.content.decode()
    assert viewer.get(f"/console/{slug}/audit/verify").status_code == 403
    assert viewer.get(f"/console/{slug}/audit/export.csv").status_code == 403


def test_verify_shows_ok_then_names_the_first_changed_event(tenant_a: TenantHandle) -> None:
    owner = _owner(tenant_a)
    slug = tenant_a.tenant.slug

    intact = owner.get(f"/console/{slug}/audit/verify").content.decode()
    first = AuditEvent.objects.filter(tenant=tenant_a.tenant).order_by("sequence").first()
    assert first is not None
    AuditEvent.objects.filter(pk=first.pk).update(actor="someone-else")  # as SQL would
    broken = owner.get(f"/console/{slug}/audit/verify").content.decode()

    assert "Chain verified" in intact
    assert "Chain broken (hash_mismatch)" in broken
    assert f"First bad event: #{first.pk}" in broken


def test_export_streams_the_filtered_trail_of_this_tenant_only(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    owner = _owner(tenant_a)  # a login of a, recorded in a's trail
    _owner(tenant_b)
    slug = tenant_a.tenant.slug

    lines = b"".join(
        owner.get(f"/console/{slug}/audit/export.jsonl?action=auth.").streaming_content
    ).splitlines()
    table = b"".join(owner.get(f"/console/{slug}/audit/export.csv").streaming_content).decode()
    events = [json.loads(line) for line in lines]

    assert events and all(e["action"].startswith("auth.") for e in events)
    assert {e["id"] for e in events} <= set(
        AuditEvent.objects.filter(tenant=tenant_a.tenant).values_list("id", flat=True)
    )
    assert table.splitlines()[0].startswith("id,tenant,")
    assert tenant_b.tenant.slug not in table
    assert owner.get(f"/console/{slug}/audit/export.xml").status_code == 404


def test_the_federation_page_shows_a_relationships_warning(tenant_a: TenantHandle) -> None:
    from cryptography.hazmat.primitives import serialization

    from federation.models import FederationRelationship
    from hallmark.jwk import public_jwk
    from tests.federation.web_peer import make_ca

    _, short_ca = make_ca("peer.test", days=100 / 86400)  # lives 100 s, polled every 60 s
    der = short_ca.public_bytes(serialization.Encoding.DER)
    key = {**public_jwk(short_ca.public_key()), "use": "x509-svid"}
    key["x5c"] = [base64.b64encode(der).decode()]
    with tenant_a.schema():
        FederationRelationship.objects.create(
            trust_domain="peer.test",
            bundle_endpoint_url="https://peer.test/bundle",
            bundle_endpoint_profile="https_web",
            bundle_json={"keys": [key], "spiffe_sequence": 1, "spiffe_refresh_hint": 60},
            bundle_sequence=1,
        )

    page = _owner(tenant_a).get(f"/console/{tenant_a.tenant.slug}/federation/")

    assert "less than three refresh intervals" in page.content.decode()


# -- the operator dashboards -------------------------------------------------------------


def test_operator_usage_sums_every_tenant_and_a_tenant_session_gets_none(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    day = dt.datetime.now(tz=dt.UTC).date() - dt.timedelta(days=2)
    _count(tenant_a, day, 5)
    _count(tenant_b, day, 7)

    page = _operator().get("/operator/usage").content.decode()
    tenant_page = _operator("ops2@platform.test").get(f"/operator/tenants/{tenant_a.tenant.pk}/")

    assert f"<tr><td>{day}</td><td>12</td></tr>" in page  # the two tenants' days summed
    assert tenant_a.tenant.slug in page and tenant_b.tenant.slug in page
    assert f"<tr><td>{day}</td><td>5</td></tr>" in tenant_page.content.decode()  # its own chart
    assert _owner(tenant_a).get("/operator/usage")["Location"].startswith("/operator/login")


def test_operator_closes_a_month_twice_with_the_same_invoices_and_both_trails_record_it(
    tenant_a: TenantHandle,
) -> None:
    operator = _operator()
    tenants = Tenant.objects.exclude(schema_name="public").count()
    forged = Client(enforce_csrf_checks=True)
    forged.cookies = operator.cookies

    without_token = forged.post("/operator/billing", {"period": LAST_MONTH})
    made_by_forgery = billing.all_invoices(LAST_MONTH)
    first = operator.post("/operator/billing", {"period": LAST_MONTH})
    again = operator.post("/operator/billing", {"period": LAST_MONTH})
    refused = operator.post("/operator/billing", {"period": "2026-13"})
    page = operator.get(f"/operator/billing?period={LAST_MONTH}").content.decode()

    assert without_token.status_code == 403 and made_by_forgery == []
    shown = first.content.decode()
    assert first.status_code == 200 and f"Closed {LAST_MONTH}: {tenants} invoice" in shown
    assert f", {tenants} new." in shown
    assert again.status_code == 200 and "0 new." in again.content.decode()
    assert refused.status_code == 400 and 'id="err_period"' in refused.content.decode()
    assert tenant_a.tenant.slug in page and "Revenue per plan" in page
    assert (
        AuditEvent.objects.filter(
            tenant=None, action="billing.close_period", actor="operator:ops@platform.test"
        ).count()
        == 2
    )
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="invoice.create").count() == 1


def test_operator_audit_trail_filters_verifies_and_exports(tenant_a: TenantHandle) -> None:
    operator = _operator()
    _owner(tenant_a)

    platform = operator.get("/operator/audit?tenant=platform&verify=1").content.decode()
    one = operator.get(f"/operator/audit?tenant={tenant_a.tenant.slug}&verify=1").content.decode()
    unknown = operator.get("/operator/audit?tenant=no-such-tenant")
    exported = b"".join(
        operator.get("/operator/audit?tenant=platform&export=jsonl").streaming_content
    )

    assert "operator.login" in platform and "The platform chain is intact" in platform
    assert f"The {tenant_a.tenant.slug} chain is intact" in one and "auth.login" in one
    assert unknown.status_code == 404
    assert {json.loads(line)["tenant"] for line in exported.splitlines()} == {None}


def test_the_health_page_shows_processes_the_last_sweep_and_the_queue(
    tenant_a: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config.celery import app
    from config.health import beat, redis_client
    from trustdomains.tasks import SWEEP_LAST_KEY, SWEEP_PENDING_KEY, rotate_all

    client = redis_client()
    client.delete(SWEEP_PENDING_KEY, SWEEP_LAST_KEY)
    before = _operator().get("/operator/health").content.decode()
    beat("agent-api", client)  # as each agent-API process does every few seconds
    monkeypatch.setitem(app.conf, "task_always_eager", True)  # the batches run here, for real
    rotate_all()
    after = _operator("ops2@platform.test").get("/operator/health").content.decode()

    assert "No sweep recorded yet" in before
    assert "agent-api processes" in after and f":{os.getpid()}</td>" in after
    assert "Last sweep queued" in after and "after it was queued (the sweep" in after
    assert "tasks waiting in the" in after

    # and the queue's figure counts every priority level (Redis keeps one list a level)
    app.control.purge()
    for priority in (None, None, 9):
        app.send_task("tests.never-run", priority=priority)
    try:
        queued = _operator("ops3@platform.test").get("/operator/health").content.decode()
    finally:
        app.control.purge()
    assert '<div class="stat">3</div><div class="stat-label">tasks waiting in the' in queued


def test_the_tenant_list_shows_each_tenants_svids_this_month(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    today = dt.datetime.now(tz=dt.UTC).date()
    _count(tenant_a, today, 4321)
    _count(tenant_b, today, 1234)

    listed = _operator().get("/operator/?sort=svids").content.decode()

    a_row = listed[listed.index(tenant_a.tenant.slug) :].split("</tr>")[0]
    b_row = listed[listed.index(tenant_b.tenant.slug) :].split("</tr>")[0]
    assert "<td>4321</td>" in a_row and "<td>1234</td>" in b_row
    assert listed.index(tenant_a.tenant.slug) < listed.index(tenant_b.tenant.slug)
