"""Helpers for issuance tests: entries and join tokens through the real REST API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from hallmark.bundle import load_pem_certificates
from tests.issuance.agentapi_harness import ServerThread, running_server


def entry_body(handle: Any, path: str = "/web", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "spiffe_id": f"spiffe://{handle.trust_domain}{path}",
        "parent_id": f"spiffe://{handle.trust_domain}/spire/agent/join_token/nobody",
        "selectors": ["unix:uid:1000"],
    }
    body.update(overrides)
    return body


def create_entry(handle: Any, path: str = "/web", **overrides: Any) -> dict[str, Any]:
    response = handle.client.post(
        "/api/v1/entries", entry_body(handle, path, **overrides), format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def create_join_token(handle: Any, **body: Any) -> dict[str, Any]:
    response = handle.client.post("/api/v1/join-tokens", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def bundle_pem(handle: Any) -> bytes:
    response = handle.client.get("/api/v1/bundle?format=pem")
    assert response.status_code == 200, response.content
    return response.content


def bundle_roots(handle: Any) -> list[x509.Certificate]:
    return load_pem_certificates(bundle_pem(handle))


@pytest.fixture
def agent_api() -> Iterator[ServerThread]:
    with running_server() as server:
        yield server
