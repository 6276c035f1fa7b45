"""The metrics middleware's labels stay bounded; the listener serves and shares its port."""

from __future__ import annotations

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.registry import REGISTRY

from config import metrics


def _requests(method: str, route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "hallmark_http_requests_total", {"method": method, "route": route, "status": status}
    )
    return value or 0.0


@pytest.mark.django_db
def test_an_unknown_path_and_method_share_one_label_each(client) -> None:  # type: ignore[no-untyped-def]
    before = _requests("other", "<unmatched>", "404")

    answer = client.generic("BREW", "/no-such-place/7f3c0d1e-coffee")

    assert answer.status_code == 404
    assert _requests("other", "<unmatched>", "404") == before + 1
    assert b"no-such-place" not in generate_latest(REGISTRY)
    assert b"BREW" not in generate_latest(REGISTRY)


def test_processes_sharing_a_metrics_port_each_answer() -> None:
    first = metrics.serve("127.0.0.1:0", reuse_port=True)
    port = first.server_address[1]
    second = metrics.serve(f"127.0.0.1:{port}", reuse_port=True)
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert answer.status_code == 200
        assert "# HELP hallmark_http_requests_total" in answer.text
    finally:
        for listener in (first, second):
            listener.shutdown()
            listener.server_close()


def test_an_address_that_is_not_host_port_is_refused() -> None:
    with pytest.raises(ValueError, match="HALLMARK_METRICS_LISTEN"):
        metrics.serve("127.0.0.1")
