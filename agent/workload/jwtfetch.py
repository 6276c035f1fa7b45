"""`hallmark-agent api fetch jwt`, `api validate jwt` and `api watch`: raw gRPC clients.

Output follows `spire-agent api ...`: `token(<id>):` and `bundle(<td id>):` blocks for fetch
jwt; "SVID is valid." with the SPIFFE ID and JSON claims for validate jwt.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from agent.workload.fetch import HEADER, FetchError, _first, socket_target
from hallmark.bundle import load_der_certificates
from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc


def _stub(channel: grpc.Channel) -> Any:
    return workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call,unused-ignore]


def _rpc_failure(exc: grpc.RpcError, timeout: float) -> FetchError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return FetchError(f"no answer from the Workload API within {timeout:g}s")
    return FetchError(f"{code.name}: {exc.details()}")


def fetch_jwt(
    socket: str | None, audience: Sequence[str], spiffe_id: str, timeout: float
) -> tuple[list[tuple[str, str, str]], dict[str, bytes]]:
    """JWT-SVIDs as (SPIFFE ID, token, hint), and the JWT bundles by trust domain ID."""
    with grpc.insecure_channel(socket_target(socket)) as channel:
        stub = _stub(channel)
        request = workloadapi_pb2.JWTSVIDRequest(audience=list(audience), spiffe_id=spiffe_id)
        try:
            response = stub.FetchJWTSVID(request, metadata=HEADER, timeout=timeout)
        except grpc.RpcError as exc:
            raise _rpc_failure(exc, timeout) from None
        call = stub.FetchJWTBundles(
            workloadapi_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=timeout
        )
        bundles = _first(call, timeout)
    svids = [(s.spiffe_id, s.svid, s.hint) for s in response.svids]
    return svids, dict(bundles.bundles)


def print_jwt(svids: list[tuple[str, str, str]], bundles: dict[str, bytes], out: TextIO) -> None:
    for spiffe_id, token, _hint in svids:
        out.write(f"token({spiffe_id}):\n\t{token}\n")
    for td_id, jwks in sorted(bundles.items()):
        out.write(f"bundle({td_id}):\n\t{jwks.decode()}\n")


def validate_jwt(
    socket: str | None, audience: str, token: str, timeout: float
) -> tuple[str, dict[str, Any]]:
    """The SPIFFE ID and claims of a valid token; FetchError (with the reason) otherwise."""
    with grpc.insecure_channel(socket_target(socket)) as channel:
        request = workloadapi_pb2.ValidateJWTSVIDRequest(audience=audience, svid=token)
        try:
            response = _stub(channel).ValidateJWTSVID(request, metadata=HEADER, timeout=timeout)
        except grpc.RpcError as exc:
            raise _rpc_failure(exc, timeout) from None
    return response.spiffe_id, json_format.MessageToDict(response.claims)


def print_validation(spiffe_id: str, claims: dict[str, Any], out: TextIO) -> None:
    out.write("SVID is valid.\n")
    out.write(f"SPIFFE ID : {spiffe_id}\n")
    out.write(f"Claims    : {json.dumps(claims, sort_keys=True, separators=(',', ':'))}\n")


def _go_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def watch_x509(socket: str | None, count: int | None, timeout: float, out: TextIO) -> int:
    """Print every FetchX509SVID message until `count` messages (or forever); returns count."""
    received = 0
    with grpc.insecure_channel(socket_target(socket)) as channel:
        call = _stub(channel).FetchX509SVID(workloadapi_pb2.X509SVIDRequest(), metadata=HEADER)
        try:
            for message in call:
                received += 1
                _print_update(received, message, out)
                if count is not None and received >= count:
                    break
        except grpc.RpcError as exc:
            raise _rpc_failure(exc, timeout) from None
        finally:
            call.cancel()
    return received


def _print_update(number: int, message: Any, out: TextIO) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    federated = sorted(message.federated_bundles)
    out.write(f"[{now}] update #{number}: {len(message.svids)} svid(s)")
    out.write(f", federated bundles: {', '.join(federated) or 'none'}\n")
    for svid in message.svids:
        leaf = load_der_certificates(svid.x509_svid)[0]
        out.write(f"SPIFFE ID:\t\t{svid.spiffe_id}\n")
        if svid.hint:
            out.write(f"Hint:\t\t\t{svid.hint}\n")
        out.write(f"Serial:\t\t\t{leaf.serial_number:x}\n")
        out.write(f"SVID Valid Until:\t{_go_time(leaf.not_valid_after_utc)}\n")
    out.write("\n")
    out.flush()
