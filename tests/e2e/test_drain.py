"""SIGTERM to `hallmark up`: a request in flight finishes, new connections are refused, exit 0.

The plane runs with HALLMARK_LOG_FORMAT=json, so its processes' logs are checked here too.
"""

from __future__ import annotations

import json
import signal
import socket

import pytest

from tests.e2e.conftest import (
    free_port,
    free_ports,
    launch_control_plane,
    stop_control_plane,
    wait_for,
)
from tests.e2e.test_metrics import metric

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
REDIS_DB = 8  # one of its own (config/test_settings.py)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _read_answer(connection: socket.socket) -> bytes:
    connection.settimeout(60)
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def test_sigterm_drains_a_request_in_flight_refuses_new_ones_and_exits_zero(tmp_path) -> None:
    from tests.e2e.conftest import control_plane_env

    env = control_plane_env(redis_db=REDIS_DB)
    env.update(HALLMARK_LOG_FORMAT="json", HALLMARK_SHUTDOWN_GRACE_SECONDS="60")
    http_port = free_port()
    plane = launch_control_plane(tmp_path, env, http_port, free_port(), metrics_port=free_ports(4))
    try:
        tenant = plane.signup("drain")
        td = tenant["trust_domain"]
        body = json.dumps(
            {
                "spiffe_id": f"spiffe://{td}/drained",
                "parent_id": f"spiffe://{td}/node",
                "selectors": ["unix:uid:0"],
            }
        ).encode()
        # given a request in flight: its headers and half its body sent, the rest held back
        request = socket.create_connection(("127.0.0.1", http_port), timeout=10)
        request.sendall(
            (
                f"POST /api/v1/entries HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {tenant['token']}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )
        wait_for(
            lambda: metric(plane, "web", "hallmark_http_requests_in_progress") >= 1,
            30,
            "the request to be in flight",
        )

        # when hallmark up gets SIGTERM
        plane.process.send_signal(signal.SIGTERM)

        # then new connections are refused while the request is still open
        wait_for(lambda: _refused(http_port), 30, "new HTTP connections to be refused")
        assert plane.process.poll() is None
        # and the request in flight finishes with its answer
        request.sendall(body[len(body) // 2 :])
        answer = _read_answer(request)
        request.close()
        assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
        # and everything exits 0
        assert plane.process.wait(timeout=120) == 0
        up_log = (tmp_path / "up.log").read_text()
        for name in ("web", "agent-api-1", "worker", "beat"):
            assert f"{name} stopped (exit status 0)" in up_log, up_log[-2000:]
    finally:
        if plane.process.poll() is None:
            stop_control_plane(plane)

    # The logs: one JSON object a line, each naming its process's role.
    for name, role in (("web", "web"), ("agent-api-1", "agent-api"), ("worker", "worker")):
        lines = [
            json.loads(line)
            for line in (tmp_path / "logs" / f"{name}.log").read_text().splitlines()
            if line.startswith("{")
        ]
        assert lines, name
        assert {line["role"] for line in lines} == {role}
        assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
