"""Workload API attack matrix, generated from the SpiffeWorkloadAPI descriptor: every RPC.

Real processes running as other uids call the agent's Workload API socket (the kernel names
the caller by SO_PEERCRED): each gets exactly its own identities, none by asking for another
uid's SPIFFE ID, and a call without the `workload.spiffe.io` header is refused whoever
makes it. The interpreter lives under /root (0700), which another uid cannot exec, so each
child starts as root and drops to its uid (setgroups/setgid/setuid) before it connects
(tests/agent/conftest.py `run_as`). An RPC this file does not know fails
`test_every_rpc_is_classified`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from hallmark.protos import workloadapi_pb2
from tests.agent.conftest import ENTRIES, WorkloadServer, run_as

SERVICE = workloadapi_pb2.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
RPCS = [method.name for method in SERVICE.methods]

# A raw call (bytes in, bytes out) made from a child process running as another uid.
CALL = r"""
import base64, json, sys, grpc
endpoint, method, header, request, streaming = sys.argv[1:6]
metadata = [("workload.spiffe.io", "true")] if header == "header" else []
with grpc.insecure_channel(endpoint) as channel:
    kind = channel.unary_stream if streaming == "stream" else channel.unary_unary
    stub = kind("/SpiffeWorkloadAPI/" + method, request_serializer=lambda b: b,
                response_deserializer=lambda b: b)
    try:
        answer = stub(bytes.fromhex(request), metadata=metadata, timeout=20)
        if streaming == "stream":
            first = next(iter(answer))
            answer.cancel()
            answer = first
        print(json.dumps({"ok": base64.b64encode(answer).decode()}))
    except grpc.RpcError as exc:
        print(json.dumps({"code": exc.code().name, "details": exc.details()}))
"""

# Which RPCs hand out identities (checked per caller), and which answer public material.
IDENTITY_RPCS = {
    "FetchX509SVID": workloadapi_pb2.X509SVIDRequest(),
    "FetchJWTSVID": workloadapi_pb2.JWTSVIDRequest(audience=["matrix"]),
}
OTHER_RPCS = {
    "FetchX509Bundles": workloadapi_pb2.X509BundlesRequest(),
    "FetchJWTBundles": workloadapi_pb2.JWTBundlesRequest(),
    "ValidateJWTSVID": workloadapi_pb2.ValidateJWTSVIDRequest(audience="matrix", svid="x.y.z"),
    "FetchWITSVID": workloadapi_pb2.WITSVIDRequest(),
    "FetchWITBundles": workloadapi_pb2.WITBundlesRequest(),
}
REQUESTS = {**IDENTITY_RPCS, **OTHER_RPCS}


def _ids_of(uid: int) -> list[str]:
    """The SPIFFE IDs whose entry's selectors all hold for a caller with this uid only."""
    return sorted(
        str(entry["spiffe_id"])
        for entry in ENTRIES
        if entry["id"] != "e-pending"
        and all(
            s == f"unix:uid:{uid}" or s == "unix:user:nobody" and uid == 65534
            for s in entry["selectors"]
        )  # type: ignore[union-attr]
    )


CALLERS = {0: _ids_of(0), 65534: _ids_of(65534), 1001: _ids_of(1001), 12345: []}


def call_as(
    server: WorkloadServer, uid: int, rpc: str, request: Any, *, header: bool = True
) -> dict[str, Any]:
    method = SERVICE.methods_by_name[rpc]
    result = run_as(
        uid,
        CALL,
        server.endpoint,
        rpc,
        "header" if header else "noheader",
        request.SerializeToString().hex(),
        "stream" if method.server_streaming else "unary",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if "ok" in answer:
        response_class = getattr(workloadapi_pb2, method.output_type.name)
        answer["message"] = response_class.FromString(base64.b64decode(answer["ok"]))
    return answer


def test_every_rpc_is_classified() -> None:
    unknown = [rpc for rpc in RPCS if rpc not in REQUESTS]
    assert not unknown, (
        f"Workload API RPCs {unknown} are not in the matrix: add them to IDENTITY_RPCS (they "
        f"hand out identities) or OTHER_RPCS in {__file__}"
    )


def test_callers_are_as_the_static_state_says() -> None:
    assert CALLERS[0] == ["spiffe://example.org/root-workload"]
    assert CALLERS[65534] == ["spiffe://example.org/nobody-workload"]
    assert CALLERS[1001] == ["spiffe://example.org/multi-a", "spiffe://example.org/multi-b"]


@pytest.mark.parametrize("uid", CALLERS)
@pytest.mark.parametrize("rpc", IDENTITY_RPCS)
def test_each_uid_gets_exactly_its_own_identities(
    workload_server: WorkloadServer, rpc: str, uid: int
) -> None:
    answer = call_as(workload_server, uid, rpc, IDENTITY_RPCS[rpc])

    if not CALLERS[uid]:
        assert answer.get("code") == "PERMISSION_DENIED", answer
        return
    assert "message" in answer, answer
    assert sorted(svid.spiffe_id for svid in answer["message"].svids) == CALLERS[uid]


# (caller, the SPIFFE ID of another uid it asks a JWT-SVID for)
FOREIGN_REQUESTS = [
    (65534, "spiffe://example.org/root-workload"),
    (0, "spiffe://example.org/nobody-workload"),
    (1001, "spiffe://example.org/root-workload"),
    (12345, "spiffe://example.org/multi-a"),
    (0, "spiffe://example.org/never"),  # its entry also needs a user that does not exist
]


@pytest.mark.parametrize(("uid", "spiffe_id"), FOREIGN_REQUESTS)
def test_jwt_svid_of_another_uids_identity_is_refused(
    workload_server: WorkloadServer, uid: int, spiffe_id: str
) -> None:
    request = workloadapi_pb2.JWTSVIDRequest(audience=["matrix"], spiffe_id=spiffe_id)

    answer = call_as(workload_server, uid, "FetchJWTSVID", request)

    assert answer.get("code") == "PERMISSION_DENIED", answer
    assert "svid" not in json.dumps(answer.get("details", ""))


@pytest.mark.parametrize("rpc", RPCS)
def test_call_without_the_security_header_is_refused(
    workload_server: WorkloadServer, rpc: str
) -> None:
    answer = call_as(workload_server, 65534, rpc, REQUESTS[rpc], header=False)

    assert answer.get("code") == "INVALID_ARGUMENT", answer
