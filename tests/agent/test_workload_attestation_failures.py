"""A Workload API caller that cannot be attested gets nothing: the refusals, over real sockets.

The server runs in a subprocess over a static state (conftest.py). Written to kill the
mutants `make mutation` found surviving in agent/workload/server.py's caller attestation.
"""

from __future__ import annotations

import subprocess

from tests.agent.conftest import PYTHON, WorkloadServer, child_env

# Connects as root (the agent records uid 0 for the connection at accept), then becomes nobody before
# asking: /proc then disagrees with the connection's credentials.
CHANGE_UID_AFTER_CONNECTING = r"""
import os, sys, grpc
channel = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(channel).result(timeout=20)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
call = channel.unary_stream(
    "/SpiffeWorkloadAPI/FetchX509SVID",
    request_serializer=lambda b: b,
    response_deserializer=lambda b: b,
)(b"", metadata=[("workload.spiffe.io", "true")], timeout=20)
try:
    for message in call:
        print("OK", len(message))
        break
except grpc.RpcError as exc:
    print(exc.code().name, exc.details())
"""


def test_a_caller_whose_uid_changed_since_it_connected_gets_nothing(
    workload_server: WorkloadServer,
) -> None:
    # when a process connects as root and asks for root's SVID after becoming nobody
    result = subprocess.run(  # noqa: S603 - our interpreter and our script
        [PYTHON, "-c", CHANGE_UID_AFTER_CONNECTING, workload_server.endpoint],
        env=child_env(),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then it is neither served root's SVID nor nobody's: attestation fails, retry later
    assert result.stdout.startswith("UNAVAILABLE workload attestation failed"), (
        result.stdout + result.stderr
    )
