"""`hallmark demo --exit`: the main job end to end, as `make demo` runs it."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.conftest import BIN, control_plane_env, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def test_demo_prints_verified_x509_and_jwt_svids_and_exits_zero(tmp_path) -> None:
    demo = subprocess.run(
        [
            str(BIN / "hallmark"),
            "demo",
            "--exit",
            "--data-dir",
            str(tmp_path),
            "--http",
            f"127.0.0.1:{free_port()}",
            "--grpc",
            f"127.0.0.1:{free_port()}",
            "--bundle-endpoint",
            f"127.0.0.1:{free_port()}",
        ],
        env=control_plane_env(redis_db=5),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "SPIFFE ID:" in demo.stdout and "/demo/workload" in demo.stdout
    assert "against the bundle from GET /api/v1/bundle" in demo.stdout
    assert "verified JWT-SVID of spiffe://" in demo.stdout
    assert "web console (while the plane runs): http://" in demo.stdout
    assert "hallmark: stopped" in demo.stdout
