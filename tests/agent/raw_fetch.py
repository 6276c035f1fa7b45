"""A raw gRPC Workload API call (bytes in, bytes out) to run with `python -c` in any process.

Arguments: ENDPOINT METHOD header|noheader. Prints `OK <size of first message>` or the gRPC
status as `CODE details`. Raw bytes keep it free of any generated Workload API module.
"""

RAW_FETCH = r"""
import sys, grpc
endpoint, method, header = sys.argv[1], sys.argv[2], sys.argv[3]
metadata = [("workload.spiffe.io", "true")] if header == "header" else []
with grpc.insecure_channel(endpoint) as channel:
    call = channel.unary_stream(
        "/SpiffeWorkloadAPI/" + method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )(b"", metadata=metadata, timeout=20)
    try:
        for message in call:
            print("OK", len(message))
            break
    except grpc.RpcError as exc:
        print(exc.code().name, exc.details())
    call.cancel()
"""
