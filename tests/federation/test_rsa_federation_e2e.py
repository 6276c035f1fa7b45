"""End to end: a workload whose entry federates with an RSA-2048 peer gets its X.509 context.

Before the fix, a federation relationship holding an RSA CA made the agent API's FetchBundle
fail for the tenant (the server could not re-serialise a non-EC authority), so the agent had
no bundle to serve and py-spiffe got no X.509 context at all.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from spiffe import TrustDomain as SpiffeTrustDomain
from spiffe import WorkloadApiClient

from tests.e2e.conftest import control_plane, wait_for  # noqa: F401 - a fixture
from tests.hallmark.foreign_keys import ca_certificate, x509_jwk

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
PARTNER = "rsa-partner.test"


def _x509_context(socket_path: Path):  # type: ignore[no-untyped-def]
    wait_for(socket_path.exists, 60, "the agent's Workload API socket")
    deadline = time.monotonic() + 60
    while True:
        try:
            with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
                return client.fetch_x509_context(timeout=20)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_workload_federating_with_an_rsa_2048_peer_gets_its_x509_context(
    control_plane,  # noqa: F811 - the fixture imported above
    tmp_path,
) -> None:
    # given a tenant holding an RSA-2048 peer CA, and a workload entry federating with it
    plane = control_plane
    tenant = plane.signup("rsafed")
    td, token = tenant["trust_domain"], tenant["token"]
    rsa_ca = ca_certificate("rsa-2048", PARTNER)
    related = plane.call(
        token,
        "POST",
        "federation-relationships",
        json={
            "trust_domain": PARTNER,
            "trust_domain_bundle": {"keys": [x509_jwk("rsa-2048") | _x5c(rsa_ca)]},
        },
    )
    assert related.status_code == 201, related.text
    alias = f"spiffe://{td}/node/rsafed"
    entry = plane.call(
        token,
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{td}/federating",
            "parent_id": alias,
            "selectors": [f"unix:uid:{os.getuid()}"],
            "federates_with": [PARTNER],
        },
    )
    assert entry.status_code == 201, entry.text
    join = plane.call(token, "POST", "join-tokens", json={"ttl": 600, "spiffe_id": alias})
    (tmp_path / "bundle.json").write_bytes(plane.call(token, "GET", "bundle").content)

    # when an agent serves the workload and py-spiffe asks for its X.509 context
    _, socket_path = plane.start_agent(
        td,
        join.json()["token"],
        tmp_path / "agent",
        "--trust-bundle",
        str(tmp_path / "bundle.json"),
    )
    context = _x509_context(socket_path)

    # then the workload has its SVID and the peer's RSA CA in its bundle set
    assert str(context.default_svid.spiffe_id) == f"spiffe://{td}/federating"
    peer = context.x509_bundle_set.get_bundle_for_trust_domain(SpiffeTrustDomain(PARTNER))
    assert peer is not None and rsa_ca in peer.x509_authorities


def _x5c(cert) -> dict:  # type: ignore[no-untyped-def]
    import base64

    from cryptography.hazmat.primitives import serialization

    return {"x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
