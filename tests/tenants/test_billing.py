"""Plans, quotas on REST writes, invoices (idempotent, per tenant), CSV and PDF."""

from __future__ import annotations

import datetime as dt
import io
import threading
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pypdf import PdfReader
from rest_framework.test import APIClient

from issuance.models import Entry
from tenants import operators
from tenants.billing.models import Invoice
from tenants.metering import counters
from tenants.models import AuditEvent
from tests.conftest import TenantHandle

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("seeded_plans")]


@pytest.fixture
def operator() -> APIClient:
    email = f"op-{uuid.uuid4().hex[:8]}@platform.example"
    operators.create_operator(email=email)
    client = APIClient()
    client.default_format = "json"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {operators.issue_operator_token(email=email)}")
    return client


def _entry(handle: TenantHandle, path: str) -> dict[str, object]:
    return {
        "spiffe_id": f"spiffe://{handle.trust_domain}{path}",
        "parent_id": f"spiffe://{handle.trust_domain}/spire/agent/x",
        "selectors": ["unix:uid:1000"],
    }


def _entries(handle: TenantHandle) -> int:
    with handle.schema():
        return Entry.objects.count()


def _last_month() -> str:
    first = counters.today().replace(day=1)
    return (first - dt.timedelta(days=1)).strftime("%Y-%m")


def _day_of(period: str) -> dt.date:
    return dt.date.fromisoformat(f"{period}-15")


# -- quotas on REST writes ---------------------------------------------------------------------
def test_an_entry_past_max_entries_is_403_quota_exceeded_and_not_stored(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    # given A limited to 2 entries by the operator, and B on the same plan without a limit
    path = f"/api/v1/operator/tenants/{tenant_a.tenant.id}"
    assert operator.patch(path, {"quotas": {"max_entries": 2}}).status_code == 200
    for name in ("/one", "/two"):
        assert (
            tenant_a.client.post(
                "/api/v1/entries", _entry(tenant_a, name), format="json"
            ).status_code
            == 201
        )

    # when A registers a third
    refused = tenant_a.client.post("/api/v1/entries", _entry(tenant_a, "/three"), format="json")

    # then it is refused, naming the quota, nothing is stored, the refusal is audited
    assert refused.status_code == 403, refused.content
    assert refused.json()["code"] == "quota_exceeded"
    assert "max_entries" in refused.json()["detail"]
    assert _entries(tenant_a) == 2
    denied = AuditEvent.objects.get(tenant=tenant_a.tenant, action="entry.create", outcome="denied")
    assert denied.detail["quota"] == "max_entries"
    # and B is not limited by A's quota
    for name in ("/one", "/two", "/three"):
        assert (
            tenant_b.client.post(
                "/api/v1/entries", _entry(tenant_b, name), format="json"
            ).status_code
            == 201
        )


def test_a_tenant_over_a_lowered_limit_is_refused_and_an_unlimited_one_is_never_counted(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    # given A with three entries, then its limit lowered to two (an operator's downgrade)
    for name in ("/one", "/two", "/three"):
        tenant_a.client.post("/api/v1/entries", _entry(tenant_a, name), format="json")
    path = f"/api/v1/operator/tenants/{tenant_a.tenant.id}"
    assert operator.patch(path, {"quotas": {"max_entries": 2}}).status_code == 200

    # when A registers a fourth, then it is refused: counted up to the limit, said as such
    refused = tenant_a.client.post("/api/v1/entries", _entry(tenant_a, "/four"), format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "quota_exceeded"
    assert "2 or more entries stored" in refused.json()["detail"]
    assert _entries(tenant_a) == 3

    # and B, with no limit, registers without its entries being counted at all
    with CaptureQueriesContext(connection) as queries:
        made = tenant_b.client.post("/api/v1/entries", _entry(tenant_b, "/one"), format="json")
    assert made.status_code == 201, made.content
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"] and "issuance_entry" in q["sql"]]
    assert counts == []


def test_a_batch_past_max_entries_is_refused_as_a_whole(
    operator: APIClient, tenant_a: TenantHandle
) -> None:
    # given A on the seeded free plan with room for one more entry than it has
    operator.patch(f"/api/v1/operator/tenants/{tenant_a.tenant.id}", {"plan": "free"})
    operator.patch(f"/api/v1/operator/tenants/{tenant_a.tenant.id}", {"quotas": {"max_entries": 3}})
    for name in ("/one", "/two"):
        tenant_a.client.post("/api/v1/entries", _entry(tenant_a, name), format="json")

    # when it batch-creates two
    body = {"entries": [_entry(tenant_a, "/three"), _entry(tenant_a, "/four")]}
    refused = tenant_a.client.post("/api/v1/entries/batch-create", body, format="json")

    # then the whole call is 403 quota_exceeded and neither is stored, the refusal audited
    # from the caller's address; one fits
    assert refused.status_code == 403, refused.content
    assert refused.json()["code"] == "quota_exceeded"
    assert _entries(tenant_a) == 2
    denied = AuditEvent.objects.get(
        tenant=tenant_a.tenant, action="entry.batch_create", outcome="denied"
    )
    assert denied.detail["quota"] == "max_entries"
    assert denied.source == "127.0.0.1"
    fits = tenant_a.client.post(
        "/api/v1/entries/batch-create", {"entries": [_entry(tenant_a, "/three")]}, format="json"
    )
    assert fits.status_code == 200 and fits.json()["results"][0]["status"]["code"] == "ok"


def test_the_plan_quota_applies_and_the_tenant_override_wins(
    operator: APIClient, tenant_a: TenantHandle
) -> None:
    # given a plan of one entry, then A's own override of two
    plan = operator.post("/api/v1/operator/plans", {"name": "tiny", "max_entries": 1})
    assert plan.status_code == 201, plan.content
    operator.patch(f"/api/v1/operator/tenants/{tenant_a.tenant.id}", {"plan": "tiny"})
    tenant_a.client.post("/api/v1/entries", _entry(tenant_a, "/one"), format="json")
    over = tenant_a.client.post("/api/v1/entries", _entry(tenant_a, "/two"), format="json")
    operator.patch(f"/api/v1/operator/tenants/{tenant_a.tenant.id}", {"quotas": {"max_entries": 2}})
    fits = tenant_a.client.post("/api/v1/entries", _entry(tenant_a, "/two"), format="json")

    assert over.status_code == 403 and over.json()["code"] == "quota_exceeded"
    assert fits.status_code == 201
    usage = tenant_a.client.get("/api/v1/usage").json()
    assert usage["plan"] == "tiny" and usage["quotas"]["max_entries"] == 2


def test_plans_are_validated_and_an_unknown_plan_is_refused(
    operator: APIClient, tenant_a: TenantHandle
) -> None:
    bad_currency = operator.post("/api/v1/operator/plans", {"name": "x1", "currency": "euro"})
    negative = operator.post("/api/v1/operator/plans", {"name": "x2", "price_per_month": -1})
    twice = operator.post("/api/v1/operator/plans", {"name": "free"})
    unknown = operator.patch(
        f"/api/v1/operator/tenants/{tenant_a.tenant.id}", {"plan": "no-such-plan"}
    )
    changed = operator.patch("/api/v1/operator/plans/team", {"price_per_month": 5900})
    missing = operator.get("/api/v1/operator/plans/nope")

    assert bad_currency.status_code == 400 and bad_currency.json()["code"] == "invalid_request"
    assert negative.status_code == 400
    assert twice.status_code == 409 and twice.json()["code"] == "plan_exists"
    assert unknown.status_code == 400
    assert changed.status_code == 200 and changed.json()["price_per_month"] == 5900
    assert missing.status_code == 404
    assert {"free", "team"} <= {p["name"] for p in operator.get("/api/v1/operator/plans").json()}


# -- invoices ----------------------------------------------------------------------------------
def _team_tenant_with_overage(operator: APIClient, handle: TenantHandle, period: str) -> None:
    """`team` (49.00 EUR, 0.50 EUR per 1000 SVIDs over) with 10 SVIDs included; 2,500 issued."""
    operator.patch(
        f"/api/v1/operator/tenants/{handle.tenant.id}",
        {"plan": "team", "quotas": {"max_svids_per_month": 10}},
    )
    counters.count(handle.tenant.pk, counters.X509_SVIDS, 2000, day=_day_of(period))
    counters.count(handle.tenant.pk, counters.JWT_SVIDS, 500, day=_day_of(period))


def test_closing_a_month_makes_one_invoice_per_tenant_with_plan_and_overage_lines(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    period = _last_month()
    _team_tenant_with_overage(operator, tenant_a, period)

    first = operator.post("/api/v1/operator/billing/close-period", {"period": period})
    again = operator.post("/api/v1/operator/billing/close-period", {"period": period})

    assert first.status_code == 200, first.content
    assert again.json()["invoices"] == first.json()["invoices"] and again.json()["created"] == 0
    mine = tenant_a.client.get("/api/v1/invoices").json()["results"]
    assert [i["period"] for i in mine] == [period]
    invoice = mine[0]
    assert [(line["kind"], line["quantity"], line["amount"]) for line in invoice["lines"]] == [
        ("plan", 1, 4900),
        ("svid_overage", 2490, 125),  # 2,490 over at 50 per 1000: 124.5, rounded up
    ]
    assert invoice["total"] == 5025 and invoice["currency"] == "EUR"
    assert Invoice.objects.filter(tenant=tenant_a.tenant).count() == 1
    # B (no plan) gets its own empty invoice, and never sees A's
    theirs = tenant_b.client.get("/api/v1/invoices").json()["results"]
    assert len(theirs) == 1 and theirs[0]["total"] == 0 and theirs[0]["lines"] == []
    assert tenant_b.client.get(f"/api/v1/invoices/{invoice['id']}").status_code == 404
    assert tenant_b.client.get(f"/api/v1/invoices/{invoice['id']}?format=pdf").status_code == 404


def test_an_invoice_as_csv_and_as_a_pdf_says_what_it_bills(
    operator: APIClient, tenant_a: TenantHandle
) -> None:
    period = _last_month()
    _team_tenant_with_overage(operator, tenant_a, period)
    operator.post("/api/v1/operator/billing/close-period", {"period": period})
    [invoice] = tenant_a.client.get("/api/v1/invoices").json()["results"]

    as_csv = tenant_a.client.get(f"/api/v1/invoices/{invoice['id']}?format=csv")
    as_pdf = tenant_a.client.get(f"/api/v1/invoices/{invoice['id']}?format=pdf")

    assert as_csv.status_code == 200 and as_csv["Content-Type"] == "text/csv"
    rows = as_csv.content.decode().splitlines()
    assert rows[0].startswith("invoice,period,kind")
    assert rows[-1].endswith(",total,,,,,5025,EUR")
    assert as_pdf.status_code == 200 and as_pdf["Content-Type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(as_pdf.content)).pages)
    for expected in (
        "Hallmark invoice",
        period,
        tenant_a.trust_domain,
        "49.00 EUR",
        "1.25 EUR",
        "50.25 EUR",
        "2490",
    ):
        assert expected in text, (expected, text)


@pytest.mark.parametrize(
    ("period", "code"),
    [
        ("2026-13", "invalid_period"),
        ("26-01", "invalid_period"),
        ("2026-1", "invalid_period"),
        ("", "invalid_request"),
        ("9999-12", "period_not_ended"),
    ],
)
def test_a_bad_period_is_400_and_makes_no_invoice(
    operator: APIClient, tenant_a: TenantHandle, period: str, code: str
) -> None:
    answer = operator.post("/api/v1/operator/billing/close-period", {"period": period})

    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == code
    assert not Invoice.objects.filter(tenant=tenant_a.tenant).exists()


def test_this_month_cannot_be_closed(operator: APIClient, tenant_a: TenantHandle) -> None:
    answer = operator.post(
        "/api/v1/operator/billing/close-period", {"period": counters.today().strftime("%Y-%m")}
    )
    assert answer.status_code == 400 and answer.json()["code"] == "period_not_ended"


@pytest.mark.django_db(transaction=True)
def test_concurrent_closes_make_one_invoice_per_tenant(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    from tenants.billing import services as billing

    period = _last_month()
    answers: list[object] = []

    def close() -> None:
        try:
            answers.append(billing.close_period(period=period, actor="operator:test"))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            answers.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=close) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(isinstance(a, dict) for a in answers), answers
    for handle in (tenant_a, tenant_b):
        assert Invoice.objects.filter(tenant=handle.tenant, period=period).count() == 1
    ids = [sorted(str(i.id) for i in a["invoices"]) for a in answers]  # type: ignore[index]
    assert ids[0] == ids[1] == ids[2]


def test_the_operator_lists_every_tenant_invoices_by_period(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    period = _last_month()
    operator.post("/api/v1/operator/billing/close-period", {"period": period})

    listed = operator.get(f"/api/v1/operator/invoices?period={period}")
    bad = operator.get("/api/v1/operator/invoices?period=last-month")

    assert listed.status_code == 200
    tenants = {i["tenant"] for i in listed.json()["results"]}
    assert {str(tenant_a.tenant.pk), str(tenant_b.tenant.pk)} <= tenants
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_period"
    closes = AuditEvent.objects.filter(action="billing.close_period", target=period)
    assert closes.count() == 1 and closes.get().tenant is None
    assert AuditEvent.objects.filter(tenant=tenant_a.tenant, action="invoice.create").count() == 1


def test_revenue_per_plan_adds_up_the_month_invoices(
    operator: APIClient, tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    from tenants.billing import services as billing

    period = _last_month()
    _team_tenant_with_overage(operator, tenant_a, period)
    operator.post("/api/v1/operator/billing/close-period", {"period": period})

    rows = {(r["plan"], r["currency"]): r for r in billing.revenue_by_plan(period)}

    assert rows[("team", "EUR")]["total"] >= 5025
    assert rows[("", "EUR")]["invoices"] >= 1
