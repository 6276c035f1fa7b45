"""The main job end to end: signup → entry → join token → agent → SVID in a py-spiffe client."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from pathlib import Path

import pytest
from spiffe import WorkloadApiClient

from hallmark.bundle import Bundle
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import verify_x509_svid
from tests.e2e.conftest import BIN, ControlPlaneProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def _register(plane: ControlPlaneProcess, tenant: dict, ttl: int = 600) -> tuple[str, str, str]:
    td = tenant["trust_domain"]
    alias = f"spiffe://{td}/node/e2e"
    workload = f"spiffe://{td}/e2e/workload"
    entry = plane.call(
        tenant["token"],
        "POST",
        "entries",
        json={
            "spiffe_id": workload,
            "parent_id": alias,
            "selectors": [f"unix:uid:{os.getuid()}"],
            "x509_svid_ttl": ttl,
            "hint": "e2e",
        },
    )
    assert entry.status_code == 201, entry.text
    join = plane.call(tenant["token"], "POST", "join-tokens", json={"ttl": 600, "spiffe_id": alias})
    assert join.status_code == 201, join.text
    return workload, join.json()["token"], alias


def _fetch_x509_context(socket_path: Path):  # type: ignore[no-untyped-def]
    wait_for(socket_path.exists, 60, "the agent's Workload API socket")
    deadline = time.monotonic() + 60
    while True:
        try:
            with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
                return client.fetch_x509_context()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_workload_gets_an_svid_that_verifies_against_the_tenant_bundle(
    control_plane, tmp_path
) -> None:
    tenant = control_plane.signup("acme")
    workload, join_token, _ = _register(control_plane, tenant, ttl=900)
    bundle_json = control_plane.call(tenant["token"], "GET", "bundle").content
    (tmp_path / "bundle.json").write_bytes(bundle_json)

    _, socket_path = control_plane.start_agent(
        tenant["trust_domain"],
        join_token,
        tmp_path / "agent",
        "--trust-bundle",
        str(tmp_path / "bundle.json"),
    )
    context = _fetch_x509_context(socket_path)

    svid = context.default_svid
    assert str(svid.spiffe_id) == workload
    bundle = Bundle.parse(TrustDomain(tenant["trust_domain"]), bundle_json)
    assert str(verify_x509_svid(svid.cert_chain, bundle.x509_authorities)) == workload
    lifetime = svid.leaf.not_valid_after_utc - svid.leaf.not_valid_before_utc
    assert dt.timedelta(seconds=890) <= lifetime <= dt.timedelta(seconds=920)  # 900 s + backdate


def test_an_upstream_signed_trust_domain_serves_workloads_chains_through_its_ca(
    control_plane, tmp_path
) -> None:
    # given a tenant whose CA is signed by the embedded upstream PKI
    tenant = control_plane.signup("upco", upstream_authority="embedded")
    workload, join_token, _ = _register(control_plane, tenant)
    bundle_json = control_plane.call(tenant["token"], "GET", "bundle").content
    bundle = Bundle.parse(TrustDomain(tenant["trust_domain"]), bundle_json)
    [root] = bundle.x509_authorities

    # when an agent bootstraps from that bundle (mTLS to the agent API through the chain)
    _, socket_path = control_plane.start_agent(
        tenant["trust_domain"],
        join_token,
        tmp_path / "agent",
        "--trust-bundle-url",
        tenant["bundle_url"],
    )
    context = _fetch_x509_context(socket_path)

    # then py-spiffe holds leaf + the tenant's CA, and the upstream root as the bundle
    svid = context.default_svid
    assert len(svid.cert_chain) == 2
    svid.cert_chain[1].verify_directly_issued_by(root)
    held = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    assert list(held.x509_authorities) == [root]
    assert str(verify_x509_svid(svid.cert_chain, [root])) == workload


def test_bootstrap_from_the_public_bundle_url_and_cli_fetch(control_plane, tmp_path) -> None:
    tenant = control_plane.signup("bolt")
    workload, join_token, _ = _register(control_plane, tenant)

    _, socket_path = control_plane.start_agent(
        tenant["trust_domain"],
        join_token,
        tmp_path / "agent",
        "--trust-bundle-url",
        tenant["bundle_url"],
    )
    _fetch_x509_context(socket_path)
    fetched = subprocess.run(
        [str(BIN / "hallmark-agent"), "api", "fetch", "x509", "--socket", str(socket_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert fetched.returncode == 0, fetched.stderr
    assert workload in fetched.stdout


def test_second_tenant_sees_nothing_of_the_first(control_plane, tmp_path) -> None:
    first = control_plane.signup("first")
    second = control_plane.signup("second")
    _, join_token, _ = _register(control_plane, first)

    entries = control_plane.call(second["token"], "GET", "entries").json()
    agents = control_plane.call(second["token"], "GET", "agents").json()
    assert not [e for e in _items(entries) if first["trust_domain"] in e["spiffe_id"]]
    assert _items(agents) == []

    # the first tenant's join token does not attest an agent to the second tenant
    agent, socket_path = control_plane.start_agent(
        second["trust_domain"],
        join_token,
        tmp_path / "agent",
        "--trust-bundle-url",
        second["bundle_url"],
    )
    exit_code = agent.wait(timeout=60)
    assert exit_code != 0
    assert "join_token" in (tmp_path / "agent" / "agent.log").read_text()
    listed = control_plane.call(first["token"], "GET", "agents").json()
    assert _items(listed) == []  # the token was not consumed by the failed attempt


def _items(page: object) -> list[dict]:
    return page["results"] if isinstance(page, dict) and "results" in page else page  # type: ignore[return-value]
