"""Every Workload API call refuses a request without `workload.spiffe.io: true`.

SPIFFE_Workload_Endpoint.md: "every client request ... MUST include the static gRPC metadata
key `workload.spiffe.io` with a value of `true` (case sensitive). Requests not including this
metadata key/value MUST be rejected". The RPCs are read from the service descriptor, so an RPC
added to the proto is covered the day it appears. Each is sent a request that succeeds with the
header (the control below), so the refusal can only come from the missing header.

The server runs in a subprocess over a static state (conftest.py); this process is uid 0.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.message import Message

from hallmark.protos import workloadapi_pb2
from tests.agent.conftest import WorkloadServer

SERVICE = workloadapi_pb2.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
RPCS = [method.name for method in SERVICE.methods]
ROOT_ID = "spiffe://example.org/root-workload"
REFUSAL = ("INVALID_ARGUMENT", "security header missing from request")
# What each RPC answers a well-formed request carrying the header. An RPC missing here is
# still checked (with an empty request); the last test asks for it to be added.
ANSWER_WITH_HEADER = {
    "FetchX509SVID": "OK",
    "FetchX509Bundles": "OK",
    "FetchJWTSVID": "OK",
    "FetchJWTBundles": "OK",
    "ValidateJWTSVID": "OK",
    "FetchWITSVID": "UNIMPLEMENTED",  # optional profile, not served (Workload API 7)
    "FetchWITBundles": "UNIMPLEMENTED",
}
BAD_METADATA = {
    "absent": (),
    "false": (("workload.spiffe.io", "false"),),
    "wrong-case-value": (("workload.spiffe.io", "True"),),
    "other-key": (("workload.spiffe.io.x", "true"),),
}


@pytest.fixture
def channel(workload_server: WorkloadServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(workload_server.endpoint) as channel:
        yield channel


def _request(rpc: str, workload_server: WorkloadServer) -> Message:
    message_class = getattr(workloadapi_pb2, SERVICE.methods_by_name[rpc].input_type.name)
    if rpc == "FetchJWTSVID":
        return message_class(audience=["reports"])
    if rpc == "ValidateJWTSVID":
        token = workload_server.command(f"mint-jwt example.org {ROOT_ID} reports 300")
        return message_class(audience="reports", svid=token)
    return message_class()


def _call(
    channel: grpc.Channel, rpc: str, request: Message, metadata: tuple[tuple[str, str], ...]
) -> tuple[str, str]:
    """The gRPC status of one call as (code name, details); ("OK", "") on a first answer."""
    method = SERVICE.methods_by_name[rpc]
    path = f"/{SERVICE.full_name}/{rpc}"
    serialize = type(request).SerializeToString
    factory = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = factory(path, request_serializer=serialize, response_deserializer=lambda b: b)
    try:
        if method.server_streaming:
            stream = call(request, metadata=metadata, timeout=20)
            try:
                next(iter(stream))
            finally:
                stream.cancel()
        else:
            call(request, metadata=metadata, timeout=20)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    return "OK", ""


@pytest.mark.parametrize("metadata", BAD_METADATA.values(), ids=BAD_METADATA.keys())
@pytest.mark.parametrize("rpc", RPCS)
def test_every_workload_api_call_without_the_security_header_is_refused(
    workload_server: WorkloadServer,
    channel: grpc.Channel,
    rpc: str,
    metadata: tuple[tuple[str, str], ...],
) -> None:
    # given a request that this workload (uid 0, entry e-root) is answered with the header
    request = _request(rpc, workload_server)

    # when it is sent without `workload.spiffe.io: true`
    answer = _call(channel, rpc, request, metadata)

    # then the call is rejected with InvalidArgument, before anything else is looked at
    assert answer == REFUSAL


@pytest.mark.parametrize("rpc", RPCS)
def test_the_same_request_with_the_security_header_is_served(
    workload_server: WorkloadServer, channel: grpc.Channel, rpc: str
) -> None:
    # the control: the refusal above comes from the header alone
    request = _request(rpc, workload_server)

    code, details = _call(channel, rpc, request, (("workload.spiffe.io", "true"),))

    assert code == ANSWER_WITH_HEADER.get(rpc, "OK"), details


def test_every_workload_api_rpc_has_an_expected_answer_here() -> None:
    # a new RPC in the proto must say here what a good request with the header gets
    assert sorted(ANSWER_WITH_HEADER) == sorted(RPCS)
