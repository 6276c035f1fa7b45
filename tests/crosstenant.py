"""The cross-tenant check every tenant API test uses: another tenant sees a plain 404."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient


def assert_not_visible_to(
    other: APIClient, method: str, path: str, body: dict[str, Any] | None = None
) -> None:
    """`other` (a client with another tenant's token) gets 404 `not_found`, as for a missing id."""
    response = getattr(other, method.lower())(path, body, format="json")
    assert response.status_code == 404, (
        f"{method} {path} by another tenant answered {response.status_code}: {response.content!r}"
    )
    assert response.json()["code"] == "not_found"
