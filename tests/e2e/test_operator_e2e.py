"""`hallmark operator create|token` against a running `hallmark up`, then the operator API over
HTTP: list tenants, suspend one (its API answers 403 tenant_suspended), reactivate it."""

from __future__ import annotations

import subprocess
import uuid

import pytest
import requests

from tests.e2e.conftest import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def _hallmark(plane, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(  # noqa: S603 - our own command
        [str(BIN / "hallmark"), *args],
        env=plane.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_operator_commands_and_the_operator_api(control_plane, tmp_path) -> None:  # type: ignore[no-untyped-def]
    email = f"op-{uuid.uuid4().hex[:8]}@platform.example"
    password_file = tmp_path / "password"
    password_file.write_text("a long operator password\n")
    tenant = control_plane.signup("opcheck")

    created = _hallmark(
        control_plane, "operator", "create", "--email", email, "--password-file", str(password_file)
    )
    again = _hallmark(control_plane, "operator", "create", "--email", email)
    token = _hallmark(control_plane, "operator", "token", "--email", email)
    unknown = _hallmark(control_plane, "operator", "token", "--email", "nobody@platform.example")

    assert created.returncode == 0, created.stderr[-2000:]
    assert again.returncode == 1 and "operator_exists" in again.stderr
    assert unknown.returncode == 1 and "operator_not_found" in unknown.stderr
    assert token.returncode == 0, token.stderr[-2000:]
    secret = token.stdout.strip().splitlines()[-1]
    assert secret.startswith("hmo_")

    def operator(method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(
            method,
            f"{control_plane.http}/api/v1/operator/{path}",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
            **kwargs,  # type: ignore[arg-type]
        )

    tenant_id = tenant["tenant"]["id"]
    assert tenant_id in {t["id"] for t in operator("GET", "tenants").json()}
    assert control_plane.call(tenant["token"], "GET", "operator/tenants").status_code == 403

    suspended = operator("PATCH", f"tenants/{tenant_id}", json={"status": "suspended"})
    assert suspended.status_code == 200, suspended.text
    refused = control_plane.call(tenant["token"], "GET", "entries")
    assert refused.status_code == 403 and refused.json()["code"] == "tenant_suspended"

    assert operator("PATCH", f"tenants/{tenant_id}", json={"status": "active"}).status_code == 200
    assert control_plane.call(tenant["token"], "GET", "entries").status_code == 200
