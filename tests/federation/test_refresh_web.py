"""Refreshing a relationship from an https_web endpoint: Web PKI, refusals, limits, SSRF guard."""

from __future__ import annotations

import ipaddress
import socket
import threading

import pytest

from federation import fetcher
from federation.tasks import refresh_relationship as refresh_task
from tests.federation.web_peer import bundle_document, running_web_peer

PEER = "web-peer.test"
pytestmark = pytest.mark.django_db


@pytest.fixture
def peer(settings):
    with running_web_peer() as running:
        settings.FEDERATION_CA_BUNDLE = running.ca_file
        yield running


def _relate(handle, url: str, td: str = PEER, **extra):
    answer = handle.client.post(
        "/api/v1/federation-relationships",
        {"trust_domain": td, "bundle_endpoint_url": url, **extra},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    return answer.json()


def _refresh(handle, td: str = PEER):
    return handle.client.post(f"/api/v1/federation-relationships/{td}/refresh")


def audit_outcomes(handle, action: str) -> list[str]:
    """Newest first; the trail is a list here and `{results}` once `people` merges."""
    data = handle.client.get("/api/v1/audit-events").json()
    rows = data["results"] if isinstance(data, dict) else data
    return [row["outcome"] for row in rows if row["action"] == action]


def _held(handle, td: str = PEER):
    return handle.client.get(f"/api/v1/federation-relationships/{td}").json()


def test_refresh_fetches_stores_and_shows_the_outcome(peer, tenant_a, tenant_b) -> None:
    # given a peer serving sequence 3 and tenant A relating to it
    document = bundle_document(PEER, 3)
    peer.answer_json("/bundle", document)
    _relate(tenant_a, peer.url + "/bundle")

    # when A refreshes now
    answer = _refresh(tenant_a)

    # then the bundle is held with its sequence, and the outcome is shown
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["bundle"] == document
    assert body["bundle_sequence"] == 3
    assert body["last_error"] == ""
    assert body["last_refresh_at"] and body["next_refresh_at"]
    # no credentials of any kind were sent
    assert "authorization" not in peer.requests[-1] and "cookie" not in peer.requests[-1]
    # and tenant B sees none of it, nor can it refresh A's relationship
    assert tenant_b.client.get(f"/api/v1/federation-relationships/{PEER}").status_code == 404
    assert _refresh(tenant_b).status_code == 404
    assert audit_outcomes(tenant_a, "federation.refresh") == ["success"]


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        (bundle_document(PEER, 1), "bundle_sequence_lower"),
        (bundle_document("someone-else.test", 9), "bundle_wrong_trust_domain"),
        (bundle_document(PEER, 9, x509_authority=False), "bundle_without_x509_authorities"),
        ("not a bundle", "invalid_bundle"),
    ],
)
def test_a_refused_bundle_keeps_the_last_good_one_and_records_why(
    peer, tenant_a, served, reason
) -> None:
    # given a good bundle of sequence 5 held
    good = bundle_document(PEER, 5)
    peer.answer_json("/bundle", good)
    _relate(tenant_a, peer.url + "/bundle")
    assert _refresh(tenant_a).status_code == 200

    # when the endpoint serves a bundle that must not replace it
    peer.answer_json("/bundle", served)
    answer = _refresh(tenant_a)

    # then 502 bundle_endpoint_error names the reason, and the good bundle stays
    assert answer.status_code == 502, answer.content
    assert answer.json()["code"] == "bundle_endpoint_error"
    assert answer.json()["reason"] == reason
    held = _held(tenant_a)
    assert held["bundle"] == good and held["bundle_sequence"] == 5
    assert held["last_error"].startswith(reason)


def test_malformed_oversized_and_failing_answers_are_refused(peer, tenant_a) -> None:
    _relate(tenant_a, peer.url + "/bundle")
    peer.answers["/bundle"] = (200, {}, b"{\x00not json")
    assert _refresh(tenant_a).json()["reason"] == "bundle_malformed"
    peer.answers["/bundle"] = (200, {}, b" " * (fetcher.MAX_BUNDLE_BYTES + 10))
    assert _refresh(tenant_a).json()["reason"] == "bundle_too_large"
    peer.answer_json("/bundle", {"code": "oops"}, status=500)
    answer = _refresh(tenant_a)
    assert answer.status_code == 502 and "HTTP 500" in answer.json()["detail"]
    assert _held(tenant_a)["bundle"] is None


def test_redirects_are_followed_to_valid_endpoint_urls_only(peer, tenant_a) -> None:
    document = bundle_document(PEER, 2)
    peer.answer_json("/moved", document)
    peer.answers["/bundle"] = (302, {"Location": "/moved"}, b"")
    _relate(tenant_a, peer.url + "/bundle")
    assert _refresh(tenant_a).json()["bundle"] == document

    # a redirect to plain http is not a valid bundle endpoint URL
    peer.answers["/bundle"] = (307, {"Location": f"http://localhost:{peer.port}/moved"}, b"")
    assert _refresh(tenant_a).json()["reason"] == "invalid_bundle_endpoint_url"
    # an endless loop of redirects ends
    peer.answers["/bundle"] = (302, {"Location": "/bundle"}, b"")
    assert "redirects" in _refresh(tenant_a).json()["detail"]


def test_an_untrusted_or_expired_web_certificate_is_refused(settings, tenant_a) -> None:
    # given no CA bundle that trusts the peer's test CA (the system store does not)
    with running_web_peer() as peer:
        peer.answer_json("/bundle", bundle_document(PEER, 1))
        settings.FEDERATION_CA_BUNDLE = ""
        _relate(tenant_a, peer.url + "/bundle")
        assert _refresh(tenant_a).json()["reason"] == "bundle_endpoint_untrusted"
    # given a trusted CA but an expired server certificate
    with running_web_peer(expired=True) as peer:
        peer.answer_json("/bundle", bundle_document(PEER, 1))
        settings.FEDERATION_CA_BUNDLE = peer.ca_file
        tenant_a.client.patch(
            f"/api/v1/federation-relationships/{PEER}",
            {"bundle_endpoint_url": peer.url + "/bundle"},
            format="json",
        )
        answer = _refresh(tenant_a)
        assert answer.json()["reason"] == "bundle_endpoint_untrusted"
        assert "expired" in answer.json()["detail"]


def test_a_certificate_not_naming_the_url_host_is_refused(settings, tenant_a) -> None:
    # given a trusted certificate for "localhost" only, reached as https://127.0.0.1
    with running_web_peer(ip_san=False) as peer:
        peer.answer_json("/bundle", bundle_document(PEER, 1))
        settings.FEDERATION_CA_BUNDLE = peer.ca_file
        _relate(tenant_a, f"https://127.0.0.1:{peer.port}/bundle")
        answer = _refresh(tenant_a)
        # then RFC 6125 name checking refuses it (and "localhost" is accepted)
        assert answer.json()["reason"] == "bundle_endpoint_untrusted"
        assert "mismatch" in answer.json()["detail"].lower()
        tenant_a.client.patch(
            f"/api/v1/federation-relationships/{PEER}",
            {"bundle_endpoint_url": peer.url + "/bundle"},
            format="json",
        )
        assert _refresh(tenant_a).status_code == 200


def test_an_endpoint_that_never_answers_times_out(monkeypatch, tenant_a) -> None:
    # given a TCP listener that accepts and never speaks TLS
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    monkeypatch.setattr(fetcher, "TOTAL_TIMEOUT_SECONDS", 1.0)
    _relate(tenant_a, f"https://localhost:{listener.getsockname()[1]}/")
    try:
        answer = _refresh(tenant_a)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert answer.status_code == 502
    assert "timed out" in answer.json()["detail"]


def test_loopback_is_refused_unless_its_network_is_allowed(peer, settings, tenant_a) -> None:
    # given the operator allows no private network
    settings.FEDERATION_ALLOWED_NETWORKS = []
    peer.answer_json("/bundle", bundle_document(PEER, 1))
    _relate(tenant_a, peer.url + "/bundle")

    # then the fetch never reaches the loopback peer
    answer = _refresh(tenant_a)
    assert answer.json()["reason"] == "bundle_endpoint_forbidden_address"
    assert peer.requests == []
    # and once 127.0.0.0/8 is allowed, it does
    settings.FEDERATION_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert _refresh(tenant_a).status_code == 200


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_non_public_addresses_are_forbidden(address) -> None:
    assert fetcher.forbidden(ipaddress.ip_address(address))


def test_public_addresses_are_not_forbidden() -> None:
    for address in ("8.8.8.8", "2001:4860:4860::8888", "151.101.1.1"):
        assert not fetcher.forbidden(ipaddress.ip_address(address))


def test_the_guard_checks_the_address_actually_connected_to(monkeypatch) -> None:
    # given a name that resolves first to a public address then (rebinding) to metadata:
    # resolve() is called once and its answer is what the connection uses
    answers = iter(
        [
            [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 443))],
        ]
    )
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: next(answers))
    with pytest.raises(fetcher.BundleEndpointError) as refused:
        fetcher.resolve("rebind.example", 443, [])
    assert refused.value.code == "bundle_endpoint_forbidden_address"


@pytest.mark.parametrize(
    "url",
    ["http://peer.example/", "https://user:pw@peer.example/", "ftp://peer.example/", "https:///x"],
)
def test_invalid_bundle_endpoint_urls_are_refused_at_input(tenant_a, url) -> None:
    answer = tenant_a.client.post(
        "/api/v1/federation-relationships",
        {"trust_domain": PEER, "bundle_endpoint_url": url},
        format="json",
    )
    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] in ("invalid_bundle_endpoint_url", "invalid_request")
    assert tenant_a.client.get(f"/api/v1/federation-relationships/{PEER}").status_code == 404


def test_the_task_backs_off_exponentially_and_recovers(peer, tenant_a) -> None:
    from federation.models import FederationRelationship

    _relate(tenant_a, peer.url + "/bundle")
    delays = []
    for _ in range(3):
        assert refresh_task(str(tenant_a.tenant.id), PEER) == "bundle_endpoint_error"
        with tenant_a.schema():
            row = FederationRelationship.objects.get(trust_domain=PEER)
        delays.append((row.next_refresh_at - row.last_refresh_at).total_seconds())
    assert row.refresh_failures == 3
    # with no bundle held, retries start at a minute and double (±10 % jitter)
    assert 54 <= delays[0] <= 66 and 108 <= delays[1] <= 132 and 216 <= delays[2] <= 264

    # when the endpoint serves again, the next run succeeds and schedules at the hint (60 s)
    peer.answer_json("/bundle", bundle_document(PEER, 1))
    assert refresh_task(str(tenant_a.tenant.id), PEER) == "ok"
    with tenant_a.schema():
        row = FederationRelationship.objects.get(trust_domain=PEER)
    assert row.refresh_failures == 0 and row.last_error == ""
    assert 54 <= (row.next_refresh_at - row.last_refresh_at).total_seconds() <= 66
    # and only the first failure of the run was audited, besides the change
    assert audit_outcomes(tenant_a, "federation.refresh") == ["success", "failure"]


def test_a_peer_ca_shorter_lived_than_three_refresh_intervals_is_warned_about(
    peer, tenant_a
) -> None:
    import base64

    from cryptography.hazmat.primitives import serialization

    from hallmark.jwk import public_jwk
    from tests.federation.web_peer import make_ca

    # given a peer whose CA lives 100 s while it asks to be polled every 60 s
    _, short_ca = make_ca(PEER, days=100 / 86400)
    der = short_ca.public_bytes(serialization.Encoding.DER)
    x509_key = {
        **public_jwk(short_ca.public_key()),
        "use": "x509-svid",
        "x5c": [base64.b64encode(der).decode()],
    }
    peer.answer_json(
        "/bundle", {"keys": [x509_key], "spiffe_sequence": 1, "spiffe_refresh_hint": 60}
    )
    _relate(tenant_a, peer.url + "/bundle")

    # then the refreshed relationship carries the warning; a long-lived CA carries none
    warnings = _refresh(tenant_a).json()["warnings"]
    assert [w["code"] for w in warnings] == ["ca_lifetime_shorter_than_three_refresh_intervals"]
    peer.answer_json("/bundle", bundle_document(PEER, 2))
    assert _refresh(tenant_a).json()["warnings"] == []


def test_every_fetch_is_counted_in_metrics_by_profile_and_outcome(peer, tenant_a) -> None:
    from prometheus_client import REGISTRY

    def fetched(outcome: str) -> float:
        labels = {"profile": "https_web", "outcome": outcome}
        return REGISTRY.get_sample_value("hallmark_federation_fetches_total", labels) or 0.0

    before = {o: fetched(o) for o in ("changed", "unchanged", "bundle_too_large")}
    peer.answer_json("/bundle", bundle_document(PEER, 4))
    _relate(tenant_a, peer.url + "/bundle")
    assert _refresh(tenant_a).status_code == 200
    assert _refresh(tenant_a).status_code == 200
    peer.answers["/bundle"] = (200, {}, b" " * (fetcher.MAX_BUNDLE_BYTES + 10))
    assert _refresh(tenant_a).status_code == 502

    assert fetched("changed") - before["changed"] == 1
    assert fetched("unchanged") - before["unchanged"] == 1
    assert fetched("bundle_too_large") - before["bundle_too_large"] == 1
