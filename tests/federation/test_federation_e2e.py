"""End to end on a real `hallmark up`: a workload of tenant A (py-spiffe, through a real agent)
receives its peers' bundles through federates_with, from an https_spiffe refresh of the
plane's own bundle endpoint and from managed federation, and follows each peer's CA rotation
with no manual step."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from spiffe import TrustDomain as SpiffeTrustDomain
from spiffe import WorkloadApiClient

from tests.e2e.conftest import control_plane, wait_for  # noqa: F401 - a fixture

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def _peer_authorities(socket_path: Path, trust_domain: str) -> set[bytes]:
    """The X.509 authorities of `trust_domain` in the workload's bundle set (DER)."""
    from cryptography.hazmat.primitives import serialization

    try:
        with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
            context = client.fetch_x509_context(timeout=10)
    except Exception:
        return set()
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(SpiffeTrustDomain(trust_domain))
    if bundle is None:
        return set()
    return {c.public_bytes(serialization.Encoding.DER) for c in bundle.x509_authorities}


def _jwt(socket_path: Path, audience: str) -> str | None:
    try:
        with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
            return client.fetch_jwt_svid(audience={audience}, timeout=10).token
    except Exception:
        return None


def _validate(socket_path: Path, token: str):  # type: ignore[no-untyped-def]
    try:
        with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
            return client.validate_jwt_svid(token, "a-service", timeout=10)
    except Exception:
        return None


def _holds(socket_path: Path, trust_domain: str, expected: set[bytes]):  # type: ignore[no-untyped-def]
    return lambda: _peer_authorities(socket_path, trust_domain) == expected


def _published(plane, token: str) -> set[bytes]:  # type: ignore[no-untyped-def]
    import base64

    keys = plane.call(token, "GET", "bundle").json()["keys"]
    return {base64.b64decode(k["x5c"][0]) for k in keys if k.get("use") == "x509-svid"}


def test_a_workload_follows_its_peers_bundles_over_https_spiffe_and_managed_federation(
    control_plane,  # noqa: F811 - the fixture imported above
    tmp_path,
) -> None:
    plane = control_plane
    a, b, d = (plane.signup(label) for label in ("fed-a", "fed-b", "fed-d"))
    td_a, td_b, td_d = a["trust_domain"], b["trust_domain"], d["trust_domain"]

    # given A federating with B over https_spiffe from the plane's bundle endpoint
    related = plane.call(
        a["token"],
        "POST",
        "federation-relationships",
        json={
            "trust_domain": td_b,
            "bundle_endpoint_url": f"https://{plane.bundle_endpoint}/",
            "bundle_endpoint_profile": "https_spiffe",
            "endpoint_spiffe_id": f"spiffe://{td_b}/spire/server",
            "trust_domain_bundle": plane.call(b["token"], "GET", "bundle").json(),
        },
    )
    assert related.status_code == 201, related.text
    # and with D by managed federation (A asks, D approves)
    asked = plane.call(a["token"], "POST", "federation-requests", json={"trust_domain": td_d})
    assert asked.status_code == 201, asked.text
    approved = plane.call(d["token"], "POST", f"federation-requests/{asked.json()['id']}/approve")
    assert approved.status_code == 200, approved.text

    # and a workload of A whose entry federates with both, served by a real agent
    alias = f"spiffe://{td_a}/node/fed"
    entry = plane.call(
        a["token"],
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{td_a}/federating",
            "parent_id": alias,
            "selectors": [f"unix:uid:{os.getuid()}"],
            "federates_with": [td_b, td_d],
        },
    )
    assert entry.status_code == 201, entry.text
    join = plane.call(a["token"], "POST", "join-tokens", json={"ttl": 600, "spiffe_id": alias})
    (tmp_path / "bundle.json").write_bytes(plane.call(a["token"], "GET", "bundle").content)
    _, socket_path = plane.start_agent(
        td_a,
        join.json()["token"],
        tmp_path / "agent",
        "--trust-bundle",
        str(tmp_path / "bundle.json"),
    )
    wait_for(socket_path.exists, 60, "the agent's Workload API socket")

    # then the workload holds B's and D's bundles
    for token, td in ((b["token"], td_b), (d["token"], td_d)):
        published = _published(plane, token)
        wait_for(_holds(socket_path, td, published), 60, f"{td}'s bundle")

    # when B and D each rotate their CA (forced prepare: a new authority is published)
    for token in (b["token"], d["token"]):
        prepared = plane.call(token, "POST", "trust-domain/x509-authorities/prepare")
        assert prepared.status_code in (200, 201), prepared.text

    # then, with no manual step, the workload gets both new bundles (B by the next scheduled
    # refresh of A's relationship, D by push)
    for token, td in ((b["token"], td_b), (d["token"], td_d)):
        published = _published(plane, token)
        assert len(published) >= 2
        started = time.monotonic()
        wait_for(_holds(socket_path, td, published), 90, f"{td}'s new bundle")
        print(f"{td}: new bundle in the workload's hands after {time.monotonic() - started:.1f}s")
    refreshed = plane.call(a["token"], "GET", f"federation-relationships/{td_b}").json()
    assert refreshed["last_error"] == "" and refreshed["last_refresh_at"]

    # and a JWT-SVID of D's workload (through D's own agent) validates at A's agent
    d_alias = f"spiffe://{td_d}/node/fed"
    d_entry = plane.call(
        d["token"],
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{td_d}/caller",
            "parent_id": d_alias,
            "selectors": [f"unix:uid:{os.getuid()}"],
        },
    )
    assert d_entry.status_code == 201, d_entry.text
    d_join = plane.call(d["token"], "POST", "join-tokens", json={"ttl": 600, "spiffe_id": d_alias})
    (tmp_path / "d-bundle.json").write_bytes(plane.call(d["token"], "GET", "bundle").content)
    _, d_socket = plane.start_agent(
        td_d,
        d_join.json()["token"],
        tmp_path / "agent-d",
        "--trust-bundle",
        str(tmp_path / "d-bundle.json"),
    )
    wait_for(d_socket.exists, 60, "D's agent's Workload API socket")
    token = wait_for(lambda: _jwt(d_socket, "a-service"), 60, "a JWT-SVID of D's workload")
    validated = wait_for(lambda: _validate(socket_path, token), 30, "A's agent to validate it")
    assert str(validated.spiffe_id) == f"spiffe://{td_d}/caller"

    # when A ends the federation with D, then A's agent refuses D's JWT-SVIDs
    ended = plane.call(a["token"], "DELETE", f"federation-relationships/{td_d}")
    assert ended.status_code == 204, ended.text
    wait_for(lambda: _validate(socket_path, token) is None, 30, "D's JWT-SVID to be refused")
