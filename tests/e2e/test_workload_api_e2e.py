"""py-spiffe, as any user would use it, against a real agent attested to a real control plane."""

from __future__ import annotations

import threading
import time

import pytest
from spiffe import JwtSource, SpiffeId, WorkloadApiClient, X509Source

from hallmark.bundle import Bundle
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import verify_x509_svid
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


@pytest.fixture(scope="module")
def workload(control_plane, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A tenant with two identities for uid 0 under one agent; yields what the tests need."""
    import os

    tenant = control_plane.signup("wlapi")
    td, token = tenant["trust_domain"], tenant["token"]
    alias = f"spiffe://{td}/node/wlapi"
    ids = [f"spiffe://{td}/wlapi/one", f"spiffe://{td}/wlapi/two"]
    for spiffe_id, hint in zip(ids, ("internal", "external"), strict=True):
        answer = control_plane.call(
            token,
            "POST",
            "entries",
            json={
                "spiffe_id": spiffe_id,
                "parent_id": alias,
                "selectors": [f"unix:uid:{os.getuid()}"],
                "hint": hint,
                "jwt_svid_ttl": 120,
            },
        )
        assert answer.status_code == 201, answer.text
    join = control_plane.call(token, "POST", "join-tokens", json={"spiffe_id": alias}).json()[
        "token"
    ]
    work = tmp_path_factory.mktemp("wlapi-agent")
    config = work / "agent.toml"
    config.write_text("resync_interval = 600\n")  # only a push can deliver changes in a test's time
    _, socket_path = control_plane.start_agent(
        td, join, work, "--trust-bundle-url", tenant["bundle_url"], "--config", str(config)
    )
    wait_for(socket_path.exists, 60, "the Workload API socket")
    endpoint = f"unix:{socket_path}"
    with WorkloadApiClient(socket_path=endpoint) as client:
        wait_for(
            lambda: _try(lambda: len(client.fetch_x509_context().x509_svids) == 2), 60, "two SVIDs"
        )
    bundle = Bundle.parse(TrustDomain(td), control_plane.call(token, "GET", "bundle").content)
    return {"tenant": tenant, "ids": ids, "endpoint": endpoint, "bundle": bundle, "alias": alias}


def _try(check):  # type: ignore[no-untyped-def]
    try:
        return check()
    except Exception:
        return False


def test_py_spiffe_gets_every_workload_api_answer_from_a_real_agent(workload) -> None:
    ids, bundle = workload["ids"], workload["bundle"]
    with WorkloadApiClient(socket_path=workload["endpoint"]) as client:
        # X.509: every identity, chains that verify against the bundle from the REST API
        context = client.fetch_x509_context()
        assert sorted(str(s.spiffe_id) for s in context.x509_svids) == ids
        for svid in context.x509_svids:
            assert str(verify_x509_svid(svid.cert_chain, bundle.x509_authorities)) == str(
                svid.spiffe_id
            )
        assert str(client.fetch_x509_svid().spiffe_id) in ids
        x509_bundles = client.fetch_x509_bundles()
        td = SpiffeId(ids[0]).trust_domain
        assert x509_bundles.get_bundle_for_trust_domain(td) is not None

        # JWT: a token per identity, bundles, validation by the agent
        svids = client.fetch_jwt_svids(audience={"payments"})
        assert sorted(str(s.spiffe_id) for s in svids) == ids
        one = client.fetch_jwt_svid(audience={"payments", "audit"}, subject=SpiffeId(ids[0]))
        assert str(one.spiffe_id) == ids[0]
        assert set(one.audience) == {"payments", "audit"}
        jwt_bundles = client.fetch_jwt_bundles()
        jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(td)
        assert jwt_bundle is not None and jwt_bundle.jwt_authorities
        validated = client.validate_jwt_svid(one.token, "audit")
        assert str(validated.spiffe_id) == ids[0]
        with pytest.raises(Exception):  # noqa: B017 - py-spiffe raises its own error types
            client.validate_jwt_svid(one.token, "someone-else")


def test_x509_source_and_jwt_source_serve_a_workload(workload) -> None:
    with X509Source(socket_path=workload["endpoint"], timeout_in_seconds=30) as x509_source:
        assert str(x509_source.svid.spiffe_id) in workload["ids"]
    with JwtSource(socket_path=workload["endpoint"], timeout_in_seconds=30) as jwt_source:
        token = jwt_source.fetch_svid(audience={"db"})
        assert str(token.spiffe_id) in workload["ids"]


def test_a_new_registration_reaches_an_open_stream_by_push(control_plane, workload) -> None:
    tenant = workload["tenant"]
    new_id = f"spiffe://{tenant['trust_domain']}/wlapi/pushed"
    seen = threading.Event()
    updates: list[float] = []

    def on_success(context) -> None:  # type: ignore[no-untyped-def]
        if any(str(s.spiffe_id) == new_id for s in context.x509_svids):
            updates.append(time.perf_counter())
            seen.set()

    import os

    with WorkloadApiClient(socket_path=workload["endpoint"]) as client:
        stream = client.stream_x509_contexts(on_success=on_success, on_error=lambda error: None)
        started = time.perf_counter()
        answer = control_plane.call(
            tenant["token"],
            "POST",
            "entries",
            json={
                "spiffe_id": new_id,
                "parent_id": workload["alias"],
                "selectors": [f"unix:uid:{os.getuid()}"],
            },
        )
        assert answer.status_code == 201
        # The agent's safety-net resync is 600 s here: only a push gets it here in time.
        assert seen.wait(timeout=20), "the new SVID never reached the open stream"
        stream.cancel()
    print(f"registration -> SVID on an open stream: {(updates[0] - started) * 1e3:.1f} ms")
