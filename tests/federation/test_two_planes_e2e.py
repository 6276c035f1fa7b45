"""End to end across two control planes: tenant A on the session's `hallmark up` and tenant C on
a second one (own database, Redis db, data dir and ports) federate over https_spiffe, each
fetching the other's bundle from the other plane's bundle endpoint. A py-spiffe workload of A
and one of C talk mutual TLS (spiffe-tls, each authorising the other's SPIFFE ID) across the two
trust domains; C rotates its CA by force (prepare, activate, taint, revoke) and A's workload
follows through refreshes alone, and the two talk again."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from spiffe import SpiffeId, WorkloadApiClient, X509Source
from spiffe import TrustDomain as SpiffeTrustDomain
from spiffetls import ClientTlsMode, ListenOptions, ServerTlsMode, dial, listen
from spiffetls.tlsconfig.authorize import authorize_id

from tests.e2e.conftest import (
    ControlPlaneProcess,
    control_plane,  # noqa: F401 - a fixture
    control_plane_env,
    free_port,
    launch_control_plane,
    stop_control_plane,
    wait_for,
)
from tests.e2e.mtls import serve_one

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
REDIS_DB = 9  # the second plane's own (config/test_settings.py gives each worker 16)


@pytest.fixture(scope="module")
def second_plane(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[ControlPlaneProcess]:
    started = time.monotonic()
    plane = launch_control_plane(
        tmp_path_factory.mktemp("hallmark-up-2"),
        control_plane_env(redis_db=REDIS_DB),
        free_port(),
        free_port(),
    )
    print(f"second plane healthy after {time.monotonic() - started:.1f}s")
    try:
        yield plane
    finally:
        stop_control_plane(plane)


def _relate(plane: ControlPlaneProcess, token: str, peer: ControlPlaneProcess, peer_tenant) -> None:  # type: ignore[no-untyped-def]
    """A relationship over https_spiffe with a tenant of another plane, bootstrapped with the
    peer's bundle as its operator would hand it over."""
    td = peer_tenant["trust_domain"]
    answer = plane.call(
        token,
        "POST",
        "federation-relationships",
        json={
            "trust_domain": td,
            "bundle_endpoint_url": f"https://{peer.bundle_endpoint}/",
            "bundle_endpoint_profile": "https_spiffe",
            "endpoint_spiffe_id": f"spiffe://{td}/spire/server",
            "trust_domain_bundle": peer.call(peer_tenant["token"], "GET", "bundle").json(),
        },
    )
    assert answer.status_code == 201, answer.text


def _workload(plane: ControlPlaneProcess, tenant, name: str, peer_td: str, work: Path) -> Path:  # type: ignore[no-untyped-def]
    """A workload entry federating with `peer_td`, served by an agent of the tenant's own."""
    td, token = tenant["trust_domain"], tenant["token"]
    alias = f"spiffe://{td}/node/{name}"
    entry = plane.call(
        token,
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{td}/{name}",
            "parent_id": alias,
            "selectors": [f"unix:uid:{os.getuid()}"],
            "federates_with": [peer_td],
        },
    )
    assert entry.status_code == 201, entry.text
    join = plane.call(token, "POST", "join-tokens", json={"ttl": 600, "spiffe_id": alias})
    bundle = work / "bundle.json"
    work.mkdir(parents=True)
    bundle.write_bytes(plane.call(token, "GET", "bundle").content)
    _, socket_path = plane.start_agent(
        td, join.json()["token"], work / "agent", "--trust-bundle", str(bundle)
    )
    wait_for(socket_path.exists, 60, f"{td}'s Workload API socket")
    return socket_path


def _published(plane: ControlPlaneProcess, token: str) -> set[bytes]:
    keys = plane.call(token, "GET", "bundle").json()["keys"]
    return {base64.b64decode(k["x5c"][0]) for k in keys if k.get("use") == "x509-svid"}


def _context(socket_path: Path):  # type: ignore[no-untyped-def]
    try:
        with WorkloadApiClient(socket_path=f"unix:{socket_path}") as client:
            return client.fetch_x509_context(timeout=10)
    except Exception:
        return None


def _held(socket_path: Path, td: str) -> set[bytes]:
    """The X.509 authorities of `td` in the workload's bundle set (DER)."""
    context = _context(socket_path)
    bundle = context and context.x509_bundle_set.get_bundle_for_trust_domain(SpiffeTrustDomain(td))
    if not bundle:
        return set()
    return {c.public_bytes(serialization.Encoding.DER) for c in bundle.x509_authorities}


def _follows(socket_path: Path, td: str, plane: ControlPlaneProcess, token: str, what: str) -> None:
    """Wait until the workload holds exactly what `td` publishes now."""
    published = _published(plane, token)
    started = time.monotonic()
    wait_for(lambda: _held(socket_path, td) == published, 60, what)
    print(f"{what}: {time.monotonic() - started:.1f}s")


def _svid_signed_by(socket_path: Path, ca_der: bytes) -> bool:
    context = _context(socket_path)
    if context is None:
        return False
    leaf = context.default_svid.leaf
    try:
        leaf.verify_directly_issued_by(x509.load_der_x509_certificate(ca_der))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _mutual_tls(server: tuple[Path, str], client: tuple[Path, str]) -> tuple[bytes, bytes]:
    """A's workload listens (mTLS, only C's client ID), C's workload dials (only A's server
    ID); each side's trust store is its own bundle plus the federated one. The messages."""
    (server_socket, server_id), (client_socket, client_id) = server, client
    address = f"127.0.0.1:{free_port()}"
    with (
        X509Source(socket_path=f"unix:{server_socket}", timeout_in_seconds=30) as server_source,
        X509Source(socket_path=f"unix:{client_socket}", timeout_in_seconds=30) as client_source,
    ):
        assert str(server_source.get_x509_context().default_svid.spiffe_id) == server_id
        assert str(client_source.get_x509_context().default_svid.spiffe_id) == client_id
        listener = listen(
            address,
            server_source,
            ListenOptions(
                tls_mode=ServerTlsMode.MTLS, authorize_fn=authorize_id(SpiffeId(client_id))
            ),
        )

        thread, received = serve_one(listener, server_id)
        try:
            connection = dial(
                address, client_source, ClientTlsMode.TLS, authorize_id(SpiffeId(server_id))
            )
            try:
                connection.sendall(b"ping from " + client_id.encode())
                answer = connection.recv(1024)
            finally:
                connection.close()
        finally:
            thread.join(timeout=30)
            listener.close()
    return received[0] if received else b"", answer


def test_workloads_of_two_planes_talk_mtls_across_trust_domains_through_a_peers_rotation(
    control_plane: ControlPlaneProcess,  # noqa: F811 - the fixture imported above
    second_plane: ControlPlaneProcess,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    plane_1, plane_2 = control_plane, second_plane
    a, c = plane_1.signup("two-a"), plane_2.signup("two-c")
    td_a, td_c = a["trust_domain"], c["trust_domain"]

    # given A (plane 1) and C (plane 2) federating both ways over https_spiffe, each fetching
    # from the other plane's bundle endpoint
    _relate(plane_1, a["token"], plane_2, c)
    _relate(plane_2, c["token"], plane_1, a)
    # and a workload of each, federating with the other's trust domain, each on its own agent
    server = (_workload(plane_1, a, "server", td_c, tmp_path / "a"), f"spiffe://{td_a}/server")
    client = (_workload(plane_2, c, "client", td_a, tmp_path / "c"), f"spiffe://{td_c}/client")
    _follows(server[0], td_c, plane_2, c["token"], "A's workload holds C's bundle")
    _follows(client[0], td_a, plane_1, a["token"], "C's workload holds A's bundle")

    # then they talk mutual TLS across the two trust domains
    assert _mutual_tls(server, client) == (
        f"ping from {client[1]}".encode(),
        f"pong from {server[1]}".encode(),
    )
    # and A's refresh of C succeeds (a refresh may meet plane 2's other bundle-endpoint process
    # still building C's server credentials, which refuses the handshake: the next one serves)
    wait_for(
        lambda: (
            plane_1.call(a["token"], "POST", f"federation-relationships/{td_c}/refresh").status_code
            == 200
        ),
        30,
        "A's refresh of C's bundle succeeds",
    )
    refreshed = plane_1.call(a["token"], "GET", f"federation-relationships/{td_c}").json()
    assert refreshed["last_error"] == "" and refreshed["last_refresh_at"]

    # when C rotates its CA by force: prepare (A's workload must trust the new CA before it
    # signs anything), activate, taint the old one (C's SVIDs are re-signed), revoke it
    def authorities(step: str, authority_id: str = "") -> dict:  # type: ignore[type-arg]
        path = "trust-domain/x509-authorities/" + (
            f"{authority_id}/{step}" if authority_id else step
        )
        answer = plane_2.call(c["token"], "POST", path)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()  # type: ignore[no-any-return]

    listed = plane_2.call(c["token"], "GET", "trust-domain").json()["x509_authorities"]
    [old] = [authority for authority in listed if authority["status"] == "active"]
    old_der = x509.load_pem_x509_certificate(old["certificate_pem"].encode()).public_bytes(
        serialization.Encoding.DER
    )
    new = authorities("prepare")
    _follows(server[0], td_c, plane_2, c["token"], "A's workload holds C's prepared CA")
    authorities("activate", new["id"])
    authorities("taint", old["id"])
    [new_der] = _published(plane_2, c["token"]) - {old_der}
    wait_for(lambda: _svid_signed_by(client[0], new_der), 60, "C's SVID signed by the new CA")
    authorities("revoke", old["id"])

    # then A's workload holds C's new CA only, with no step on A's side
    _follows(server[0], td_c, plane_2, c["token"], "A's workload drops C's revoked CA")
    assert _held(server[0], td_c) == {new_der}
    # and the workloads talk mutual TLS again, C's side now proving itself with the new CA
    assert _svid_signed_by(client[0], new_der) and not _svid_signed_by(client[0], old_der)
    assert _mutual_tls(server, client) == (
        f"ping from {client[1]}".encode(),
        f"pong from {server[1]}".encode(),
    )
    # and A's next fetch authenticates C's endpoint with the new CA alone (the latest bundle)
    answer = plane_1.call(a["token"], "POST", f"federation-relationships/{td_c}/refresh")
    assert answer.status_code == 200, answer.text
    published = plane_2.call(c["token"], "GET", "bundle").json()
    assert answer.json()["last_error"] == "" and answer.json()["bundle"] == published
    assert answer.json()["bundle_sequence"] == published["spiffe_sequence"]
    print(f"two-plane federation test body: {time.monotonic() - started:.1f}s")
