"""Prometheus metrics of a real `hallmark up`: each process kind's listener, counters that move."""

from __future__ import annotations

import os
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ControlPlaneProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str) -> tuple[str, Samples]:
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    samples = [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    ]
    return answer.text, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def metric(plane: ControlPlaneProcess, kind: str, name: str, **labels: str) -> float:
    return total(scrape(plane.metrics_url(kind))[1], name, **labels)


@pytest.fixture(scope="module")
def watched(control_plane, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Figures before, a tenant whose agent attested and fetched an SVID, and the figures after."""
    from spiffe import WorkloadApiClient

    plane = control_plane
    before = scrape(plane.metrics_url("agent-api"))[1]
    tenant = plane.signup("metrics")
    td = tenant["trust_domain"]
    alias = f"spiffe://{td}/node/metrics"
    entry = plane.call(
        tenant["token"],
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{td}/metrics/workload",
            "parent_id": alias,
            "selectors": [f"unix:uid:{os.getuid()}"],
        },
    )
    assert entry.status_code == 201, entry.text
    join = plane.call(tenant["token"], "POST", "join-tokens", json={"ttl": 600, "spiffe_id": alias})
    work = tmp_path_factory.mktemp("metrics-agent")
    (work / "bundle.json").write_bytes(plane.call(tenant["token"], "GET", "bundle").content)
    agent, socket_path = plane.start_agent(
        td, join.json()["token"], work / "agent", "--trust-bundle", str(work / "bundle.json")
    )

    def fetched() -> bool:
        if not socket_path.exists():
            return False
        try:
            with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
                return client.fetch_x509_context() is not None
        except Exception:
            return False

    wait_for(fetched, 90, "the agent to serve an X.509-SVID")
    yield {"before": before, "tenant": tenant, "entry": entry.json(), "agent": agent}
    agent.terminate()
    agent.wait(timeout=10)


def test_web_requests_are_counted_by_route_template_and_status(control_plane, watched) -> None:
    token = watched["tenant"]["token"]
    missing = str(uuid.uuid4())
    # The router's URL pattern for one entry, whatever the id.
    route = "api/v1/entries/(?P<pk>[0-9a-fA-F-]{1,64})$"
    before = scrape(control_plane.metrics_url("web"))[1]

    assert control_plane.call(token, "GET", f"entries/{missing}").status_code == 404
    assert control_plane.call(token, "GET", f"entries/{watched['entry']['id']}").status_code == 200

    text, after = scrape(control_plane.metrics_url("web"))
    for status in ("404", "200"):
        name, labels = "hallmark_http_requests_total", {"route": route, "status": status}
        assert total(after, name, method="GET", **labels) == (
            total(before, name, method="GET", **labels) + 1
        )
    assert total(after, "hallmark_http_request_duration_seconds_count", route=route) >= 2
    assert missing not in text


def test_the_agent_api_counts_attestations_svids_calls_and_open_watch_streams(
    control_plane, watched
) -> None:
    before = watched["before"]

    def moved() -> bool:
        # The stream's first message follows the agent check, which waits up to 0.5 s for
        # others to batch with (issuance.agentapi.recheck): wait for it too.
        _, after = scrape(control_plane.metrics_url("agent-api"))
        messages = total(after, "hallmark_agentapi_stream_messages_total", method="WatchUpdates")
        return total(after, "hallmark_agentapi_connections") >= 1 and messages > total(
            before, "hallmark_agentapi_stream_messages_total", method="WatchUpdates"
        )

    wait_for(moved, 30, "the connected agent and its stream's first message to be sampled")
    _, after = scrape(control_plane.metrics_url("agent-api"))

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("hallmark_attestations_total", type="join_token", outcome="ok") >= 1
    assert grew("hallmark_svids_minted_total", kind="x509_agent") >= 1
    assert grew("hallmark_svids_minted_total", kind="x509_workload") >= 1
    assert grew("hallmark_agentapi_calls_total", method="AttestAgent", code="OK") >= 1
    assert grew("hallmark_agentapi_call_duration_seconds_count", method="BatchNewX509SVID") >= 1
    assert total(after, "hallmark_agentapi_streams_open", method="WatchUpdates") >= 1
    assert grew("hallmark_agentapi_stream_messages_total", method="WatchUpdates") >= 1


def test_a_refused_attestation_is_counted_with_its_status(control_plane, watched, tmp_path) -> None:
    td = watched["tenant"]["trust_domain"]

    def refused() -> dict[str, float]:
        """join_token attestations by outcome, the successful ones left out."""
        _, samples = scrape(control_plane.metrics_url("agent-api"))
        counts: dict[str, float] = {}
        for name, labels, value in samples:
            if name == "hallmark_attestations_total" and labels.get("type") == "join_token":
                if labels.get("outcome") != "ok":
                    counts[labels["outcome"]] = counts.get(labels["outcome"], 0.0) + value
        return counts

    before = refused()
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(control_plane.call(watched["tenant"]["token"], "GET", "bundle").content)

    agent, _ = control_plane.start_agent(
        td, "not-a-join-token", tmp_path / "agent", "--trust-bundle", str(bundle)
    )
    try:
        wait_for(
            lambda: sum(refused().values()) > sum(before.values()),
            60,
            "the refused attestation to be counted",
        )
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    # a refusal grew under its gRPC status, not under "ok"
    grown = {o for o, n in refused().items() if n > before.get(o, 0.0)}
    assert grown, grown


def test_the_worker_counts_tasks_and_rotation_and_beat_answers(control_plane) -> None:
    succeeded = {"task": "trustdomains.tasks.rotate_trust_domains", "state": "succeeded"}
    before = metric(control_plane, "worker", "hallmark_rotations_total")

    # Beat queues a sweep every interval; its batch checks every tenant's trust domain.
    wait_for(
        lambda: metric(control_plane, "worker", "hallmark_rotations_total") > before,
        60,
        "a rotation sweep to run",
    )

    _, worker = scrape(control_plane.metrics_url("worker"))
    assert total(worker, "hallmark_rotation_sweeps_total", outcome="queued") >= 1
    assert total(worker, "hallmark_celery_tasks_total", **succeeded) >= 1
    assert total(worker, "hallmark_celery_task_duration_seconds_count", task=succeeded["task"]) >= 1
    # Beat reads the platform-wide gauges at scrape time: the sweep's tenants reported their
    # journals, and the broker its queue (its depth itself moves as workers take messages).
    _, beat = scrape(control_plane.metrics_url("beat"))
    assert total(beat, "hallmark_rotation_tenants_reported") >= 1
    names = {name for name, _, _ in beat}
    assert {"hallmark_rotation_lag_seconds", "hallmark_bundle_sequence_age_seconds"} <= names
    assert [labels for name, labels, _ in beat if name == "hallmark_celery_queue_depth"] == [
        {"queue": "celery"}
    ]


def test_no_metric_names_a_tenant(control_plane, watched) -> None:
    tenant = watched["tenant"]
    secrets_of_tenant = [
        tenant["tenant"]["id"],
        tenant["tenant"]["slug"],
        tenant["trust_domain"],
        watched["entry"]["id"],
    ]
    for kind in ("web", "agent-api", "worker", "beat"):
        text, _ = scrape(control_plane.metrics_url(kind))
        for value in secrets_of_tenant:
            assert value not in text, (kind, value)
