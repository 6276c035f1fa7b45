"""The console in Debian's Chromium against a real `hallmark up` (gunicorn, WhiteNoise, Celery,
the agent API): sign-in, each page's main flow, role-based hiding with a forged POST refused,
the operator's suspend → the tenant's API refuses → reactivate, another tenant's URL → 404,
CSRF refusal, the CSP, and axe-core on each page (no serious or critical violation)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import PASSWORD, PHONE, World, screenshot, serious_violations
from tests.e2e.conftest import BIN, wait_for

pytestmark = pytest.mark.e2e  # no django_db: the browser tests reach the data through the plane


def _console(world: World, path: str = "") -> str:
    return f"/console/{world.a.slug}/{path}"


def _drawn(page: Any) -> list[int]:
    """The bars Chart.js holds for each chart on the page (-1: a chart it did not draw)."""
    page.wait_for_function("document.querySelectorAll('canvas.chart-canvas').length > 0")
    return page.evaluate(
        """Array.from(document.querySelectorAll("canvas.chart-canvas"), (canvas) => {
            const chart = window.Chart && window.Chart.getChart(canvas);
            return chart ? chart.data.datasets[0].data.length : -1;
        })"""
    )


def _check_axe(page: Any) -> None:
    problems = serious_violations(page)
    assert not problems, "\n".join(problems)


def test_sign_in_lands_on_the_overview_with_authorities_and_bundle(
    owner: Any, world: World
) -> None:
    prepared = world.api(world.a, "POST", "trust-domain/x509-authorities/prepare")
    assert prepared.status_code in (200, 201), prepared.text
    owner.goto(_console(world))

    expect(owner.get_by_role("heading", name="Overview")).to_be_visible()
    expect(owner.get_by_text(world.a.trust_domain).first).to_be_visible()
    expect(owner.locator(".timeline .badge.active").first).to_be_visible()
    expect(owner.locator(".timeline .badge.prepared")).to_be_visible()  # the forced rotation
    with owner.expect_download() as download:
        owner.get_by_role("link", name="Download bundle (JSON)").click()
    bundle = json.loads(Path(download.value.path()).read_text())
    assert {key["use"] for key in bundle["keys"]} >= {"x509-svid", "jwt-svid"}
    _check_axe(owner)
    screenshot(owner, "overview", phone=True)


def test_entries_create_with_errors_beside_fields_filter_edit_delete(
    owner: Any, world: World
) -> None:
    td = world.a.trust_domain
    owner.goto(_console(world, "entries/"))
    owner.get_by_role("link", name="New entry").click()
    owner.get_by_label("SPIFFE ID", exact=True).fill("spiffe://elsewhere.test/api")
    owner.get_by_label("Parent ID").fill(f"spiffe://{td}/node")
    owner.get_by_label("Selectors").fill("unix:uid:1000")
    owner.get_by_role("button", name="Create entry").click()

    expect(owner.locator("#err_spiffe_id")).to_contain_text("spiffe_id_outside_trust_domain")
    _check_axe(owner)  # the form with its errors
    owner.get_by_label("SPIFFE ID", exact=True).fill(f"spiffe://{td}/api")
    owner.get_by_role("button", name="Create entry").click()
    owner.wait_for_url("**/entries/")
    for name in ("web", "db"):
        made = world.api(
            world.a,
            "POST",
            "entries",
            json={
                "spiffe_id": f"spiffe://{td}/{name}",
                "parent_id": f"spiffe://{td}/node",
                "selectors": [f"unix:uid:{2000 if name == 'db' else 1000}"],
            },
        )
        assert made.status_code == 201, made.text
    owner.reload()
    expect(owner.locator("#entries-table tbody tr")).to_have_count(3)

    owner.get_by_label("Selector").fill("unix:uid:2000")  # htmx swaps the table as one types
    expect(owner.locator("#entries-table tbody tr")).to_have_count(1)
    expect(owner.locator("#entries-table")).to_contain_text(f"spiffe://{td}/db")
    _check_axe(owner)
    screenshot(owner, "entries", phone=True)

    owner.get_by_role("link", name=f"Edit spiffe://{td}/db").click()
    owner.get_by_label("Selectors").fill("unix:uid:2000\nunix:gid:50")
    owner.get_by_role("button", name="Save entry").click()
    owner.wait_for_url("**/entries/")
    stored = world.api(world.a, "GET", "entries", params={"spiffe_id": f"spiffe://{td}/db"})
    assert stored.json()[0]["selectors"] == ["unix:gid:50", "unix:uid:2000"]

    owner.get_by_role("link", name=f"Delete spiffe://{td}/web").click()
    expect(owner.get_by_role("heading", name="Delete this entry?")).to_be_visible()
    owner.get_by_role("button", name="Delete entry").click()
    owner.wait_for_url("**/entries/")
    left = world.api(world.a, "GET", "entries").json()
    assert sorted(e["spiffe_id"] for e in left) == [f"spiffe://{td}/api", f"spiffe://{td}/db"]


def test_a_join_token_with_its_command_starts_an_agent_then_ban_and_evict(
    owner: Any, world: World, tmp_path: Path
) -> None:
    owner.goto(_console(world, "join-tokens/"))
    owner.get_by_label("Lifetime (seconds)").fill("600")
    owner.get_by_role("button", name="Create join token").click()
    command = owner.locator("#agent-command").inner_text()
    token = owner.locator("#join-token").inner_text().strip()
    _check_axe(owner)
    screenshot(owner, "join-tokens")

    # The command as shown, with this test's own socket and data directory.
    args = shlex.split(command)
    assert args[:2] == ["hallmark-agent", "run"] and f"--join-token {token}" in command
    args[args.index("--socket") + 1] = str(tmp_path / "agent.sock")
    args[args.index("--data-dir") + 1] = str(tmp_path / "data")
    log = (tmp_path / "agent.log").open("ab")
    agent = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log, stderr=log)  # noqa: S603
    try:
        wait_for(lambda: world.api(world.a, "GET", "agents").json(), 60, "the agent to attest")
        owner.goto(_console(world, "agents/"))
        expect(owner.locator("tbody tr")).to_have_count(1)
        expect(owner.locator("tbody")).to_contain_text("join_token")
        _check_axe(owner)
        screenshot(owner, "agents")

        owner.get_by_role("link", name=re.compile("^Ban ")).click()
        owner.get_by_role("button", name="Ban agent").click()
        expect(owner.locator("tbody .badge.banned")).to_be_visible()
        owner.get_by_role("link", name=re.compile("^Evict ")).click()
        owner.get_by_role("button", name="Evict agent").click()
        expect(owner.get_by_text("No agent has attested yet.")).to_be_visible()
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        log.close()
    assert world.api(world.a, "GET", "agents").json() == []


def test_federation_request_approved_by_the_other_tenant(
    owner: Any, owner_b: Any, world: World
) -> None:
    owner.goto(_console(world, "federation/"))
    owner.get_by_label(re.compile("^Trust domain of another tenant")).fill(world.b.trust_domain)
    owner.get_by_role("button", name="Ask to federate").click()
    expect(owner.get_by_role("status")).to_contain_text(f"Asked {world.b.trust_domain}")

    owner_b.goto(f"/console/{world.b.slug}/federation/")
    owner_b.get_by_role("button", name=f"Approve {world.a.trust_domain}").click()
    expect(owner_b.locator("tbody").first).to_contain_text(world.a.trust_domain)
    expect(owner_b.locator("tbody").first).to_contain_text("managed")

    owner.reload()
    expect(owner.locator("tbody").first).to_contain_text(world.b.trust_domain)
    expect(owner.locator(".badge.approved")).to_be_visible()
    _check_axe(owner)
    screenshot(owner, "federation")


def test_members_invite_and_api_token_shown_once_then_revoked(owner: Any, world: World) -> None:
    owner.goto(_console(world, "members/"))
    owner.get_by_label("Email").fill(f"auditor@{world.a.trust_domain}")
    owner.get_by_label("Role", exact=True).select_option("auditor")
    owner.get_by_role("button", name="Invite").click()
    expect(owner.locator("#invitation-token")).to_contain_text("hmi_")
    expect(owner.locator("tbody")).to_contain_text(f"auditor@{world.a.trust_domain}")
    _check_axe(owner)
    screenshot(owner, "members")
    invited = owner.locator("tbody tr", has_text=f"auditor@{world.a.trust_domain}")
    invited.get_by_label(re.compile("^Role of ")).select_option("registrar")
    invited.get_by_role("button", name="Change role").click()
    expect(invited.locator(".badge").first).to_have_text("registrar")
    invited.get_by_role("button", name=re.compile("^Remove ")).click()
    expect(owner.locator("tbody")).not_to_contain_text(f"auditor@{world.a.trust_domain}")

    owner.goto(_console(world, "api-tokens/"))
    owner.get_by_label("Name").fill("ci")
    owner.get_by_label("Role", exact=True).select_option("registrar")
    owner.get_by_role("button", name="Create token").click()
    secret = owner.locator("#api-token").inner_text().strip()
    assert world.plane.call(secret, "GET", "entries").status_code == 200
    _check_axe(owner)
    owner.goto(_console(world, "api-tokens/"))  # shown once: afterwards only its prefix
    assert secret not in owner.content()
    owner.get_by_role("button", name=re.compile("^Revoke ci ")).click()
    expect(owner.get_by_role("button", name=re.compile("^Revoke ci "))).to_have_count(0)
    assert world.plane.call(secret, "GET", "entries").status_code == 401


def test_audit_trail_verifies_its_chain_filters_and_exports(owner: Any, world: World) -> None:
    owner.goto(_console(world, "audit/"))
    owner.get_by_role("button", name="Verify the chain").click()
    expect(owner.locator("#verification")).to_contain_text("Chain verified")
    owner.get_by_label("Action starts with").fill("auth.")
    owner.get_by_role("button", name="Filter").click()

    rows = owner.locator("tbody tr")
    expect(rows.first).to_contain_text("auth.login")
    assert all(
        a.startswith("auth.") for a in owner.locator("tbody td.mono:nth-child(3)").all_inner_texts()
    )
    assert owner.locator("main form[method=post]").count() == 0
    _check_axe(owner)
    screenshot(owner, "audit")
    with owner.expect_download() as download:
        owner.get_by_role("link", name="Export CSV").click()
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert exported and all(r["action"].startswith("auth.") for r in exported)
    assert {r["tenant"] for r in exported} == {world.a.slug}


def test_usage_charts_then_the_operator_closes_a_month_and_the_owner_gets_its_invoice(
    owner: Any, operator: Any, world: World
) -> None:
    today = dt.datetime.now(tz=dt.UTC).date()
    month = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    owner.goto(_console(world, "usage/"))
    expect(owner.get_by_role("heading", name="Usage")).to_be_visible()
    expect(owner.locator("canvas.chart-canvas")).to_have_count(6)
    expect(owner.locator("canvas.chart-canvas").first).to_be_visible()
    assert _drawn(owner) == [30] * 6  # Chart.js drew every chart, a bar a day
    _check_axe(owner)
    screenshot(owner, "usage")

    operator.goto(f"/operator/tenants/{world.a.id}/")
    operator.get_by_label("Plan", exact=True).select_option("team")
    operator.get_by_role("button", name="Save plan and quotas").click()
    operator.goto("/operator/billing")
    operator.get_by_label("Month (YYYY-MM)").fill(month)
    operator.get_by_role("button", name="Close month").click()
    expect(operator.get_by_role("status")).to_contain_text(f"Closed {month}")
    expect(operator.get_by_role("region", name="Invoices")).to_contain_text(world.a.slug)
    _check_axe(operator)
    screenshot(operator, "operator-billing")

    owner.goto(_console(world, "invoices/"))
    expect(owner.locator("tbody tr")).to_have_count(1)
    expect(owner.locator("tbody")).to_contain_text("Plan Team, one month — 49.00 EUR")
    with owner.expect_download() as download:
        owner.get_by_role("link", name=f"PDF of {month}").click()
    _check_axe(owner)
    screenshot(owner, "invoices")
    b_invoice = world.api(world.b, "GET", "invoices").json()["results"][0]["id"]
    other = owner.goto(_console(world, f"invoices/{b_invoice}.pdf"))

    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")
    assert other is not None and other.status == 404


def test_a_viewer_is_offered_no_writes_and_its_forged_post_is_refused(
    viewer: Any, world: World
) -> None:
    viewer.goto(_console(world, "entries/"))

    expect(viewer.get_by_role("heading", name="Registration entries")).to_be_visible()
    expect(viewer.get_by_role("link", name="New entry")).to_have_count(0)
    expect(viewer.get_by_role("link", name=re.compile("^(Edit|Delete) "))).to_have_count(0)
    expect(viewer.get_by_role("link", name="Audit")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Usage")).to_be_visible()
    expect(viewer.get_by_role("link", name="Invoices")).to_be_visible()
    assert viewer.request.get(_console(world, "audit/export.csv")).status == 403
    _check_axe(viewer)
    csrf = viewer.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    forged = viewer.request.post(
        _console(world, "entries/new"),
        form={
            "csrfmiddlewaretoken": csrf,
            "spiffe_id": f"spiffe://{world.a.trust_domain}/forged",
            "parent_id": f"spiffe://{world.a.trust_domain}/node",
            "selectors": "unix:uid:0",
        },
    )
    assert forged.status == 403
    listed = world.api(
        world.a, "GET", "entries", params={"spiffe_id": f"spiffe://{world.a.trust_domain}/forged"}
    )
    assert listed.json() == []


def test_another_tenants_urls_answer_404(owner: Any, world: World) -> None:
    made = world.api(
        world.b,
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{world.b.trust_domain}/secret",
            "parent_id": f"spiffe://{world.b.trust_domain}/node",
            "selectors": ["unix:uid:7"],
        },
    )
    b_entry = made.json()["id"]

    other_console = owner.goto(f"/console/{world.b.slug}/entries/")
    other_entry = owner.goto(_console(world, f"entries/{b_entry}/"))

    assert other_console is not None and other_console.status == 404
    assert other_entry is not None and other_entry.status == 404
    assert world.b.trust_domain not in owner.content()


def test_a_post_without_the_csrf_token_is_refused(owner: Any, world: World) -> None:
    refused = owner.request.post(_console(world, "join-tokens/"), form={"ttl": "600"})

    assert refused.status == 403


def test_headers_cookies_and_static_files(owner: Any, world: World) -> None:
    violations: list[str] = []
    owner.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    answer = owner.goto(_console(world, "entries/"))
    assert answer is not None
    headers = answer.headers
    htmx_loaded = owner.evaluate("typeof window.htmx")
    cookies = {c["name"]: c for c in owner.context.cookies()}
    static = owner.request.get("/static/console/console.css")

    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert htmx_loaded == "object" and not violations
    assert static.status == 200 and "text/css" in static.headers["content-type"]
    session = cookies["sessionid"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"  # Secure: test_access.py


def test_the_operator_suspends_a_tenant_its_api_refuses_then_reactivates(
    operator: Any, owner: Any, world: World
) -> None:
    operator.goto("/operator/")
    operator.get_by_label("Name, slug or trust domain").fill(world.a.trust_domain)
    operator.get_by_label("Sort by").select_option("agents")
    operator.get_by_role("button", name="Search").click()
    expect(operator.locator("tbody tr")).to_have_count(1)
    _check_axe(operator)
    screenshot(operator, "operator-tenants")

    operator.get_by_role("link", name=re.compile("console-a")).click()
    expect(operator.locator("canvas.chart-canvas")).to_have_count(3)
    assert _drawn(operator) == [30] * 3  # its usage, last 30 days
    operator.get_by_label("max_agents").fill("25")
    operator.get_by_role("button", name="Save plan and quotas").click()
    expect(operator.get_by_label("max_agents")).to_have_value("25")
    operator.get_by_role("button", name="Suspend tenant").click()
    expect(operator.locator(".lead .badge.suspended")).to_be_visible()
    refused = world.api(world.a, "GET", "entries")
    console_page = owner.goto(_console(world))
    _check_axe(operator)
    screenshot(operator, "operator-tenant")
    operator.get_by_role("button", name="Reactivate tenant").click()
    expect(operator.locator(".lead .badge.active")).to_be_visible()

    assert refused.status_code == 403 and refused.json()["code"] == "tenant_suspended"
    assert console_page is not None and console_page.status == 403
    assert world.api(world.a, "GET", "entries").status_code == 200
    trail = operator.get_by_role("region", name=re.compile("^Audit events of"))
    expect(trail).to_contain_text("tenant.reactivate")


def test_platform_health_and_a_phone_width(operator: Any, owner: Any, world: World) -> None:
    operator.goto("/operator/health")
    expect(operator.locator("tbody").first).to_contain_text("database")
    agent_apis = operator.get_by_role("region", name="agent-api processes")
    expect(agent_apis.locator(".badge.ok").first).to_be_visible()
    expect(operator.locator("#rotation")).to_contain_text("Last sweep queued")
    expect(operator.locator("#queue .stat").first).to_have_text(re.compile(r"^\d+$"))
    _check_axe(operator)
    screenshot(operator, "operator-health")

    owner.set_viewport_size(PHONE)
    owner.goto(_console(world, "entries/"))
    width = owner.evaluate("document.documentElement.scrollWidth")
    _check_axe(owner)
    owner.set_viewport_size({"width": 1280, "height": 860})
    assert width <= PHONE["width"]  # nothing overflows the phone's width; tables scroll inside


def test_operator_usage_across_tenants_and_the_platform_audit_trail(
    operator: Any, world: World
) -> None:
    operator.goto("/operator/usage")
    expect(operator.locator("canvas.chart-canvas")).to_have_count(4)
    assert _drawn(operator) == [30] * 4
    expect(
        operator.get_by_role("region", name="Usage per tenant").locator("tbody tr").first
    ).to_be_visible()
    _check_axe(operator)
    screenshot(operator, "operator-usage")

    operator.goto("/operator/audit")
    operator.get_by_label("Trail", exact=True).fill("platform")
    operator.get_by_role("button", name="Verify the chain").click()
    expect(operator.locator("#verification")).to_contain_text("The platform chain is intact")
    expect(operator.locator("tbody")).to_contain_text("operator.login")
    _check_axe(operator)
    screenshot(operator, "operator-audit")


def test_without_javascript_the_filter_still_works(browser: Any, world: World) -> None:
    """Progressive enhancement: htmx swaps the table in place; without script the form is a
    plain GET and the page comes back filtered."""
    td = world.a.trust_domain
    made = world.api(
        world.a,
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{td}/no-script-report",
            "parent_id": f"spiffe://{td}/node",
            "selectors": ["unix:uid:3000"],
        },
    )
    assert made.status_code == 201, made.text
    context = browser.new_context(base_url=world.plane.http, java_script_enabled=False)
    page = context.new_page()
    page.goto("/login?next=" + _console(world, "entries/"))
    page.get_by_label("Email").fill(world.a.owner_email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/entries/")
    page.get_by_label("SPIFFE ID contains").fill("no-script")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**q=no-script**")

    rows = page.locator("#entries-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(f"spiffe://{td}/no-script-report")
    context.close()


def test_hallmark_up_prints_the_console_and_how_to_sign_in(world: World) -> None:
    printed = (world.plane.data_dir / "up.log").read_text()

    assert f"web console    {world.plane.http}/console/" in printed
    assert f"{world.plane.http}/operator/login" in printed


def test_the_sign_in_pages_pass_axe(browser: Any, world: World) -> None:
    context = browser.new_context(base_url=world.plane.http)
    page = context.new_page()
    problems = []
    for path in ("/login", "/operator/login"):
        page.goto(path)
        problems += serious_violations(page)
    context.close()

    assert not problems, "\n".join(problems)
