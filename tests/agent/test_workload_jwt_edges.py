"""JWT-SVID profile edges of the Workload API: exact refusals and what each SVID carries.

The server runs in a subprocess over a static state (conftest.py); this process is uid 0.
Written to kill the mutants `make mutation` found surviving in agent/workload/server.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc
from tests.agent.conftest import WorkloadServer, run_as

HEADER = (("workload.spiffe.io", "true"),)


@pytest.fixture
def stub(workload_server: WorkloadServer) -> Iterator[workloadapi_pb2_grpc.SpiffeWorkloadAPIStub]:
    with grpc.insecure_channel(workload_server.endpoint) as channel:
        yield workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)


@pytest.mark.parametrize(
    "request_message",
    [
        workloadapi_pb2.ValidateJWTSVIDRequest(audience="reports"),
        workloadapi_pb2.ValidateJWTSVIDRequest(svid="a.b.c"),
        workloadapi_pb2.ValidateJWTSVIDRequest(),
    ],
    ids=["no-svid", "no-audience", "neither"],
)
def test_validate_jwt_svid_names_both_required_fields_when_one_is_missing(
    stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub,
    request_message: workloadapi_pb2.ValidateJWTSVIDRequest,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ValidateJWTSVID(request_message, metadata=HEADER, timeout=20)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "jwt_invalid_request: audience and svid are both required"


@pytest.mark.parametrize("spiffe_id", ["not-a-spiffe-id", "spiffe://example.org/a%20b"])
def test_fetch_jwt_svid_for_a_malformed_spiffe_id_is_invalid_argument(
    stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub, spiffe_id: str
) -> None:
    # a malformed ID must not be read as "no ID asked for" (which would return every SVID)
    request = workloadapi_pb2.JWTSVIDRequest(audience=["reports"], spiffe_id=spiffe_id)
    with pytest.raises(grpc.RpcError) as raised:
        stub.FetchJWTSVID(request, metadata=HEADER, timeout=20)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("invalid spiffe_id:"), raised.value.details()


FETCH_JWT_HINTS = r"""
import json, sys, grpc
from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)
    response = stub.FetchJWTSVID(
        workloadapi_pb2.JWTSVIDRequest(audience=["reports"]),
        metadata=[("workload.spiffe.io", "true")],
        timeout=20,
    )
print(json.dumps({s.spiffe_id: s.hint for s in response.svids}))
"""


def test_each_jwt_svid_carries_its_entrys_hint(workload_server: WorkloadServer) -> None:
    # given uid 1001, registered twice with hints "a" and "b"
    result = run_as(1001, FETCH_JWT_HINTS, workload_server.endpoint)

    # then each JWT-SVID names its hint, so the workload can tell them apart
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "spiffe://example.org/multi-a": "a",
        "spiffe://example.org/multi-b": "b",
    }
