"""A Workload API connection is attested as the process that opened it, over real gRPC.

The attack (issue 7, finding 3): a process connects, forks, leaves the connection to its
child, then the parent execs another binary of the same uid (or exits and its pid goes to
another process); the child asks over the inherited connection and would be served the
identity of whatever now runs at the parent's pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.agent.conftest import PYTHON, REPO, RUNNER, WorkloadServer, child_env

SLEEP = os.path.realpath("/bin/sleep")
INTERPRETER = os.path.realpath(PYTHON)
ENTRIES = [
    {
        "id": "e-python",
        "spiffe_id": "spiffe://example.org/python",
        "selectors": ["unix:uid:0", f"unix:path:{INTERPRETER}"],
    },
    {
        "id": "e-sleep",
        "spiffe_id": "spiffe://example.org/sleep",
        "selectors": ["unix:uid:0", f"unix:path:{SLEEP}"],
    },
]

# The parent connects and forks. The child relays a local gRPC channel over the inherited
# connection and prints `FIRST <result>`; then the parent execs /bin/sleep (`exec`) or exits
# (`exit`). After that the child answers each line on stdin with `AGAIN <result>`.
FORK_AND_SWAP = r"""
import os, socket, sys, tempfile, threading
path, mode = sys.argv[1], sys.argv[2]
inherited = socket.socket(socket.AF_UNIX)
inherited.connect(path)
ready_r, ready_w = os.pipe()
if os.fork():
    os.close(ready_w)
    os.read(ready_r, 1)
    if mode == "exec":
        os.execv("/bin/sleep", ["sleep", "120"])
    os._exit(0)
os.close(ready_r)
import grpc
from hallmark.protos import workloadapi_pb2

front = os.path.join(tempfile.mkdtemp(), "front.sock")
listener = socket.socket(socket.AF_UNIX)
listener.bind(front)
listener.listen(1)

def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass

def serve():
    conn, _ = listener.accept()  # one connection only: the inherited one carries it
    threading.Thread(target=pump, args=(conn, inherited), daemon=True).start()
    pump(inherited, conn)

threading.Thread(target=serve, daemon=True).start()
channel = grpc.insecure_channel("unix:" + front)
fetch = channel.unary_stream(
    "/SpiffeWorkloadAPI/FetchX509SVID",
    request_serializer=lambda m: m.SerializeToString(),
    response_deserializer=workloadapi_pb2.X509SVIDResponse.FromString,
)

def call():
    stream = fetch(workloadapi_pb2.X509SVIDRequest(),
                   metadata=[("workload.spiffe.io", "true")], timeout=20)
    try:
        for message in stream:
            return "OK " + " ".join(s.spiffe_id for s in message.svids)
    except grpc.RpcError as exc:
        return f"{exc.code().name} {exc.details()}"
    finally:
        stream.cancel()

print("FIRST", call(), flush=True)
os.write(ready_w, b"x")
for _ in sys.stdin:
    print("AGAIN", call(), flush=True)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[WorkloadServer]:
    public = tempfile.mkdtemp(prefix="hallmark-wl-")
    os.chmod(public, 0o755)  # noqa: S103
    data_dir = tempfile.mkdtemp(prefix="hallmark-agent-data-")
    socket_path = os.path.join(public, "api.sock")
    process = subprocess.Popen(
        [
            PYTHON,
            str(RUNNER),
            "--socket",
            socket_path,
            "--data-dir",
            data_dir,
            "--entries",
            json.dumps(ENTRIES),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=REPO,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "READY"
    try:
        yield WorkloadServer(process, socket_path, data_dir)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(public, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def _start(server: WorkloadServer, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", FORK_AND_SWAP, server.socket_path, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd="/",
    )


def _again(scenario: subprocess.Popen[str]) -> str:
    assert scenario.stdin is not None and scenario.stdout is not None
    scenario.stdin.write("go\n")
    scenario.stdin.flush()
    return scenario.stdout.readline().strip()


def _wait_for_exe(pid: int, executable: str) -> None:
    for _ in range(2000):
        try:
            if os.readlink(f"/proc/{pid}/exe") == executable:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not come to run {executable}")


def _finish(scenario: subprocess.Popen[str]) -> None:
    assert scenario.stdin is not None
    scenario.stdin.close()  # the child stops at EOF
    if scenario.poll() is None:
        scenario.kill()
    scenario.wait()


def test_child_of_a_parent_that_execs_another_binary_gets_not_its_identity(
    server: WorkloadServer,
) -> None:
    # given a python process that connected and left the connection to its child,
    # which was served python's identity over it
    scenario = _start(server, "exec")
    try:
        assert scenario.stdout is not None
        assert scenario.stdout.readline().strip() == "FIRST OK spiffe://example.org/python"

        # when the parent execs /bin/sleep, which has an identity of its own
        _wait_for_exe(scenario.pid, SLEEP)
        answer = _again(scenario)

        # then the child is refused, and never served sleep's identity
        assert answer.startswith("AGAIN PERMISSION_DENIED workload_caller_changed"), answer
        assert "another executable" in answer
        assert "spiffe://example.org/sleep" not in answer
    finally:
        _finish(scenario)


def _take_pid(pid: int) -> subprocess.Popen[str] | None:
    """Start a python process at `pid` (free again) by steering the kernel's next pid."""
    for _ in range(50):
        with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
            handle.write(str(pid - 1))
        candidate = subprocess.Popen(
            [PYTHON, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, text=True
        )
        if candidate.pid == pid:
            return candidate
        candidate.kill()
        candidate.wait()
    return None


def test_connection_whose_process_exited_or_whose_pid_was_reused_is_refused(
    server: WorkloadServer,
) -> None:
    if not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("recycling a pid needs a writable /proc/sys/kernel/ns_last_pid (root)")
    # given a python process that connected, handed the connection to its child and exited
    scenario = _start(server, "exit")
    reuser = None
    try:
        assert scenario.stdout is not None
        assert scenario.stdout.readline().strip() == "FIRST OK spiffe://example.org/python"
        scenario.wait(timeout=30)  # the parent is gone and reaped; its pid is free

        # then the orphaned connection is refused while nothing runs at that pid
        answer = _again(scenario)
        assert answer.startswith("AGAIN PERMISSION_DENIED workload_caller_changed"), answer

        # when the pid goes to another process of the same binary and uid
        reuser = _take_pid(scenario.pid)
        if reuser is None:
            pytest.skip(f"another process took pid {scenario.pid} first")
        _wait_for_exe(reuser.pid, INTERPRETER)
        answer = _again(scenario)

        # then the connection is still refused: same pid, uid and binary, another process
        assert answer.startswith("AGAIN PERMISSION_DENIED workload_caller_changed"), answer
        assert "another process" in answer
    finally:
        if reuser is not None:
            reuser.kill()
            reuser.wait()
        _finish(scenario)
