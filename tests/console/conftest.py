"""Browser fixtures: Debian's Chromium driven by Playwright, against the session's `hallmark up`.

The browser is launched once for the module; each principal (a tenant's owner, a viewer, the
other tenant's owner, an operator) has a browser context of its own, signed in once, as
people at different desks would be. Pages are checked with axe-core (axe-playwright-python).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import BIN, ControlPlaneProcess, session_control_plane

PASSWORD = "correct horse battery staple"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
# Set HALLMARK_CONSOLE_SCREENSHOTS=docs to refresh the screenshots committed under docs/.
SCREENSHOTS = os.environ.get("HALLMARK_CONSOLE_SCREENSHOTS", "")


def chromium_path() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(found).exists(), "Debian's chromium is missing: `make test` installs it as root"
    return found


@dataclass
class Tenant:
    """A tenant signed up over REST, as the browser tests use it."""

    slug: str
    trust_domain: str
    token: str
    owner_email: str
    id: str


@dataclass
class World:
    plane: ControlPlaneProcess
    a: Tenant
    b: Tenant
    viewer_email: str
    operator_email: str

    def api(self, tenant: Tenant, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.plane.call(tenant.token, method, path, **kwargs)


def _signup(plane: ControlPlaneProcess, label: str) -> Tenant:
    made = plane.signup(label)
    return Tenant(
        slug=made["tenant"]["slug"],
        trust_domain=made["trust_domain"],
        token=made["token"],
        owner_email=f"ops@{made['trust_domain']}",
        id=made["tenant"]["id"],
    )


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[ControlPlaneProcess]:
    """The same `hallmark up` as tests/e2e/ (one plane a session, started by whoever asks first)."""
    yield from session_control_plane(tmp_path_factory)


@pytest.fixture(scope="module")
def world(control_plane: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> World:
    a, b = _signup(control_plane, "console-a"), _signup(control_plane, "console-b")
    viewer = f"viewer-{secrets.token_hex(3)}@{a.trust_domain}"
    invited = control_plane.call(
        a.token, "POST", "members", json={"email": viewer, "role": "viewer"}
    )
    assert invited.status_code == 201, invited.text
    accepted = requests.post(
        f"{control_plane.http}/api/v1/invitations/accept",
        json={"invitation_token": invited.json()["invitation_token"], "password": PASSWORD},
        timeout=30,
    )
    assert accepted.status_code == 200, accepted.text
    operator = f"op-{secrets.token_hex(3)}@platform.example"
    password_file = tmp_path_factory.mktemp("operator") / "password"
    password_file.write_text(PASSWORD + "\n")
    created = subprocess.run(  # noqa: S603 - our own command
        [
            str(BIN / "hallmark"),
            "operator",
            "create",
            "--email",
            operator,
            "--password-file",
            str(password_file),
        ],
        env=control_plane.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr[-2000:]
    return World(control_plane, a, b, viewer, operator)


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    """Chromium, launched once for the module after the plane and its data are ready.

    Playwright's sync API runs an event loop in this thread, inside which Django refuses
    database calls: everything that needs the test database happens before the launch.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def _context(browser: Any, world: World) -> Any:
    context = browser.new_context(base_url=world.plane.http, viewport=LAPTOP)
    context.set_default_timeout(15_000)
    return context


def sign_in(browser: Any, world: World, email: str, *, operator: bool = False) -> Any:
    """A page of a new browser context, signed in through the login form."""
    page = _context(browser, world).new_page()
    page.goto("/operator/login" if operator else "/login?next=/console/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/operator/" if operator else "**/console/*/")
    return page


@pytest.fixture(scope="module")
def owner(browser: Any, world: World) -> Iterator[Any]:
    page = sign_in(browser, world, world.a.owner_email)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def owner_b(browser: Any, world: World) -> Iterator[Any]:
    page = sign_in(browser, world, world.b.owner_email)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def viewer(browser: Any, world: World) -> Iterator[Any]:
    page = sign_in(browser, world, world.viewer_email)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def operator(browser: Any, world: World) -> Iterator[Any]:
    page = sign_in(browser, world, world.operator_email, operator=True)
    yield page
    page.context.close()


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


def screenshot(page: Any, name: str, *, phone: bool = False) -> None:
    """Save the page (and at a phone's width) under docs/ when asked to refresh them."""
    if not SCREENSHOTS:
        return
    folder = Path(__file__).resolve().parents[2] / SCREENSHOTS
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"console-{name}.png"), full_page=True)
    if phone:
        size = page.viewport_size
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(folder / f"console-{name}-phone.png"), full_page=True)
        page.set_viewport_size(size)
