"""The Workload API server as a SPIFFE client library (py-spiffe) sees it.

The server runs in a subprocess fed by a static state (see conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time

import pytest
from cryptography import x509
from spiffe import TrustDomain as SpiffeTrustDomain
from spiffe import WorkloadApiClient, X509Source
from spiffe.workloadapi.x509_context import X509Context

from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import verify_x509_svid
from tests.agent.conftest import WorkloadServer, popen_as, run_as
from tests.agent.raw_fetch import RAW_FETCH

PY_SPIFFE_IDS = r"""
import json, sys
from spiffe import WorkloadApiClient
with WorkloadApiClient(socket_path=sys.argv[1]) as client:
    try:
        context = client.fetch_x509_context(timeout=20)
    except Exception as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"ids": [str(s.spiffe_id) for s in context.x509_svids]}))
"""


def test_root_workload_receives_its_svid_which_verifies_against_the_bundle(
    workload_server: WorkloadServer,
) -> None:
    # when this process (uid 0) fetches its X.509 context with py-spiffe
    with WorkloadApiClient(socket_path=workload_server.endpoint) as client:
        context = client.fetch_x509_context(timeout=20)

    # then it gets exactly the uid-0 entry's SVID (not the entry needing another user too)
    assert [str(s.spiffe_id) for s in context.x509_svids] == ["spiffe://example.org/root-workload"]
    svid = context.default_svid
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    assert bundle is not None
    ca = x509.load_pem_x509_certificate(workload_server.ca_pem)
    assert ca in bundle.x509_authorities
    verified = verify_x509_svid(svid.cert_chain, list(bundle.x509_authorities))
    assert verified.trust_domain == TrustDomain("example.org")
    assert svid.leaf.public_key() == svid.private_key.public_key()


def test_workload_running_as_nobody_gets_only_its_own_svid(
    workload_server: WorkloadServer,
) -> None:
    # when a workload running as uid 65534 fetches through py-spiffe
    result = run_as(65534, PY_SPIFFE_IDS, workload_server.endpoint)

    # then it receives nobody's SVID and never root's
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ids": ["spiffe://example.org/nobody-workload"]}


def test_workload_matching_no_entry_is_permission_denied(
    workload_server: WorkloadServer,
) -> None:
    # when a uid that no entry names asks for SVIDs
    result = run_as(12345, RAW_FETCH, workload_server.endpoint, "FetchX509SVID", "header")

    # then the answer is PermissionDenied, as the standard says
    assert result.stdout.startswith("PERMISSION_DENIED"), result.stdout + result.stderr


def test_request_without_security_header_is_invalid_argument(
    workload_server: WorkloadServer,
) -> None:
    # when a client omits the workload.spiffe.io header
    result = run_as(0, RAW_FETCH, workload_server.endpoint, "FetchX509SVID", "noheader")

    # then it is refused with InvalidArgument before anything else
    assert result.stdout.strip() == "INVALID_ARGUMENT security header missing from request"


def test_entry_whose_svid_is_not_minted_yet_answers_unavailable_after_a_short_wait(
    workload_server: WorkloadServer,
) -> None:
    # given an entry for uid 4242 whose SVID the agent does not hold (runner waits 2 s)
    # when uid 4242 asks
    result = run_as(4242, RAW_FETCH, workload_server.endpoint, "FetchX509SVID", "header")

    # then it is told to retry (Unavailable), not that it has no identity
    assert result.stdout.startswith("UNAVAILABLE x509_svid_pending"), result.stdout


def test_any_caller_gets_the_x509_bundles(workload_server: WorkloadServer) -> None:
    # when a uid with no entry asks for bundles
    result = run_as(12345, RAW_FETCH, workload_server.endpoint, "FetchX509Bundles", "header")

    # then it gets them: bundles are public
    assert result.stdout.startswith("OK "), result.stdout + result.stderr

    # and py-spiffe reads the trust domain's bundle
    with WorkloadApiClient(socket_path=workload_server.endpoint) as client:
        bundles = client.fetch_x509_bundles(timeout=20)
    bundle = bundles.get_bundle_for_trust_domain(SpiffeTrustDomain("example.org"))
    assert bundle is not None
    ca = x509.load_pem_x509_certificate(workload_server.ca_pem)
    assert ca in bundle.x509_authorities


def test_stream_sends_a_new_message_when_svids_rotate(workload_server: WorkloadServer) -> None:
    # given a py-spiffe stream that has received the first context
    updates: queue.Queue[X509Context] = queue.Queue()
    errors: queue.Queue[Exception] = queue.Queue()
    with WorkloadApiClient(socket_path=workload_server.endpoint) as client:
        handler = client.stream_x509_contexts(updates.put, errors.put)
        try:
            first = updates.get(timeout=20)

            # when the agent's SVIDs change
            assert workload_server.command("rotate") == "ROTATED"

            # then a new complete message arrives on the same stream
            second = updates.get(timeout=20)
        finally:
            handler.cancel()
    assert errors.empty()
    assert second.default_svid.spiffe_id == first.default_svid.spiffe_id
    assert second.default_svid.leaf.serial_number != first.default_svid.leaf.serial_number


def test_x509_source_follows_bundle_changes(workload_server: WorkloadServer) -> None:
    # given an X509Source on the Workload API
    with X509Source(
        WorkloadApiClient(socket_path=workload_server.endpoint), timeout_in_seconds=20
    ) as source:
        td = source.get_x509_context().default_svid.spiffe_id.trust_domain
        before = len(source.get_bundle_for_trust_domain(td).x509_authorities)

        # when a new CA is added to the bundle
        assert workload_server.command("new-ca") == "BUNDLE"

        # then the source sees the larger bundle
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if len(source.get_bundle_for_trust_domain(td).x509_authorities) == before + 1:
                break
            time.sleep(0.05)
        assert len(source.get_bundle_for_trust_domain(td).x509_authorities) == before + 1


@pytest.fixture(autouse=True)
def _server_alive(workload_server: WorkloadServer) -> None:
    assert workload_server.process.poll() is None, "the Workload API server process died"


@pytest.mark.parametrize("method", ["FetchWITSVID", "FetchWITBundles"])
def test_wit_svid_profile_answers_unimplemented(
    workload_server: WorkloadServer, method: str
) -> None:
    # when a client calls a WIT-SVID profile RPC (optional profile, not supported yet)
    result = run_as(0, RAW_FETCH, workload_server.endpoint, method, "header")

    # then the answer is exactly what Workload API 7 requires of a server without it
    assert result.stdout.startswith("UNIMPLEMENTED"), result.stdout + result.stderr


def test_a_method_the_workload_api_does_not_have_is_unimplemented(
    workload_server: WorkloadServer,
) -> None:
    # when a client calls a method SpiffeWorkloadAPI does not define
    result = run_as(0, RAW_FETCH, workload_server.endpoint, "FetchEverything", "header")

    # then gRPC's answer for an unknown method, naming it
    assert result.stdout.startswith("UNIMPLEMENTED"), result.stdout + result.stderr
    assert "/SpiffeWorkloadAPI/FetchEverything" in result.stdout


def _listening_unix_sockets(pid: int) -> set[str]:
    """Paths of the Unix sockets process `pid` listens on (its fds matched to /proc/net/unix)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    paths = set()
    with open(f"/proc/{pid}/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            # Flags 00010000 (__SO_ACCEPTCON): a listening socket
            if fields[6] in inodes and int(fields[3], 16) & 0x10000:
                paths.add(fields[7] if len(fields) > 7 else "")
    return paths


def test_the_agent_listens_on_the_public_socket_alone(workload_server: WorkloadServer) -> None:
    # when the Workload API server runs, what Unix sockets does it listen on?
    listening = _listening_unix_sockets(workload_server.process.pid)

    # then the workload's socket only: gRPC is served on the accepted connection itself, so
    # there is no inner server a workload could reach around the credentials read at accept
    assert listening == {workload_server.socket_path}


RAW_STREAM = r"""
import sys, grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    call = channel.unary_stream(
        "/SpiffeWorkloadAPI/FetchX509SVID",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )(b"", metadata=[("workload.spiffe.io", "true")], timeout=30)
    try:
        for message in call:
            print("MESSAGE", flush=True)
    except grpc.RpcError as exc:
        print(exc.code().name, exc.details(), flush=True)
"""


def test_removing_the_callers_last_entry_ends_its_stream_with_permission_denied(
    workload_server: WorkloadServer,
) -> None:
    # given uid 65534 streaming its SVIDs, having received the first message
    stream = popen_as(65534, RAW_STREAM, workload_server.endpoint)
    try:
        assert stream.stdout is not None
        assert stream.stdout.readline().strip() == "MESSAGE"

        # when its only entry is removed from the agent
        assert workload_server.command("remove e-nobody") == "REMOVED"

        # then the open stream ends with PermissionDenied
        assert stream.stdout.readline().startswith("PERMISSION_DENIED")
    finally:
        stream.kill()
        stream.wait()
