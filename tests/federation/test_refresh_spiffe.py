"""Refreshing over https_spiffe from Hallmark's own bundle endpoint (a real TLS server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.federation.endpoint_harness import EndpointThread, handshake, running_endpoint
from tests.federation.web_peer import bundle_document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def endpoint() -> Iterator[EndpointThread]:
    with running_endpoint() as server:
        yield server


def _relate(handle, peer, port: int, **overrides):
    body = {
        "trust_domain": peer.trust_domain,
        "bundle_endpoint_url": f"https://127.0.0.1:{port}/",
        "bundle_endpoint_profile": "https_spiffe",
        "endpoint_spiffe_id": f"spiffe://{peer.trust_domain}/spire/server",
        "trust_domain_bundle": peer.client.get("/api/v1/bundle").json(),
        **overrides,
    }
    answer = handle.client.post("/api/v1/federation-relationships", body, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()


def _refresh(handle, td: str):
    return handle.client.post(f"/api/v1/federation-relationships/{td}/refresh")


def test_https_spiffe_refresh_authenticates_the_peer_and_follows_its_rotation(
    endpoint, tenant_a, tenant_b
) -> None:
    # given A federating with B over https_spiffe, bootstrapped with B's bundle
    _relate(tenant_a, tenant_b, endpoint.port)
    handshake(endpoint.port, tenant_b.trust_domain)  # B's credentials are built

    # when B prepares a new CA (its bundle's sequence rises) and A refreshes
    prepared = tenant_b.client.post("/api/v1/trust-domain/x509-authorities/prepare")
    assert prepared.status_code in (200, 201), prepared.content
    answer = tenant_a.client.post(
        f"/api/v1/federation-relationships/{tenant_b.trust_domain}/refresh"
    )

    # then A holds B's newest bundle, fetched with SNI = B's trust domain
    assert answer.status_code == 200, answer.content
    newest = tenant_b.client.get("/api/v1/bundle").json()
    assert answer.json()["bundle"] == newest
    assert answer.json()["bundle_sequence"] == newest["spiffe_sequence"]
    assert answer.json()["last_error"] == ""


def test_a_wrong_endpoint_spiffe_id_is_refused(endpoint, tenant_a, tenant_b) -> None:
    _relate(
        tenant_a,
        tenant_b,
        endpoint.port,
        endpoint_spiffe_id=f"spiffe://{tenant_b.trust_domain}/not/the/server",
    )
    handshake(endpoint.port, tenant_b.trust_domain)
    held = tenant_a.client.get(f"/api/v1/federation-relationships/{tenant_b.trust_domain}")

    answer = _refresh(tenant_a, tenant_b.trust_domain)

    assert answer.status_code == 502
    assert answer.json()["reason"] == "bundle_endpoint_wrong_spiffe_id"
    after = tenant_a.client.get(f"/api/v1/federation-relationships/{tenant_b.trust_domain}")
    assert after.json()["bundle"] == held.json()["bundle"]


def test_an_endpoint_not_signed_by_the_held_bundle_is_refused(endpoint, tenant_a, tenant_b) -> None:
    # given A bootstrapped with a bundle that is not B's (an impostor's keys)
    _relate(
        tenant_a,
        tenant_b,
        endpoint.port,
        trust_domain_bundle=bundle_document(tenant_b.trust_domain, 1),
    )
    handshake(endpoint.port, tenant_b.trust_domain)

    answer = _refresh(tenant_a, tenant_b.trust_domain)

    assert answer.status_code == 502
    assert answer.json()["reason"] == "bundle_endpoint_untrusted"


def test_sni_names_the_relationships_trust_domain(endpoint, tenant_a, tenant_b) -> None:
    # given A relating to "C" (tenant B's bundle pasted under another name is not B): the
    # endpoint is asked, by SNI, for a trust domain it does not serve
    _relate(tenant_a, tenant_b, endpoint.port)
    handshake(endpoint.port, tenant_b.trust_domain)
    other = tenant_a.client.post(
        "/api/v1/federation-relationships",
        {
            "trust_domain": "unknown-peer.test",
            "bundle_endpoint_url": f"https://127.0.0.1:{endpoint.port}/",
            "bundle_endpoint_profile": "https_spiffe",
            "endpoint_spiffe_id": f"spiffe://{tenant_b.trust_domain}/spire/server",
        },
        format="json",
    )
    assert other.status_code == 201, other.content

    answer = _refresh(tenant_a, "unknown-peer.test")

    # then the handshake fails: the SNI was unknown-peer.test, not B's name
    assert answer.status_code == 502
    assert (
        tenant_a.client.get("/api/v1/federation-relationships/unknown-peer.test").json()["bundle"]
        is None
    )
