"""HALLMARK_LOG_FORMAT=json: one JSON object a line, with the role and the bound tenant."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from config import logcontext


def _record(message: str, *, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("hallmark.test", logging.WARNING, __file__, 1, message, (), exc_info)  # type: ignore[arg-type]


def test_a_json_line_carries_the_bound_tenant_and_request_id_only_while_bound() -> None:
    formatter = logcontext.JsonFormatter()

    with logcontext.bound(tenant="tenant-a", request_id="r-1"):
        inside = json.loads(formatter.format(_record('minted "x"\nsecond line')))
    outside = json.loads(formatter.format(_record("after")))

    assert inside["tenant"] == "tenant-a"
    assert inside["request_id"] == "r-1"
    assert inside["message"] == 'minted "x"\nsecond line'
    assert {"time", "level", "logger", "role", "pid"} <= inside.keys()
    assert inside["level"] == "WARNING" and inside["logger"] == "hallmark.test"
    assert "tenant" not in outside and "request_id" not in outside


def test_an_exception_is_one_field_of_the_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        line = logcontext.JsonFormatter().format(_record("failed", exc_info=sys.exc_info()))

    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_a_process_configured_for_json_writes_json_lines_with_its_role() -> None:
    program = (
        "import logging.config\n"
        "from config.logcontext import logging_config\n"
        "logging.config.dictConfig(logging_config('INFO'))\n"
        "logging.getLogger('hallmark.probe').info('ready')\n"
    )
    env = {**os.environ, "HALLMARK_LOG_FORMAT": "json", "HALLMARK_PROCESS_ROLE": "agent-api"}

    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )

    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines == [lines[0]] and lines[0]["message"] == "ready"
    assert lines[0]["role"] == "agent-api"


def test_an_unknown_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALLMARK_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="json or text"):
        logcontext.log_format()


def test_a_web_requests_log_lines_carry_its_request_id() -> None:
    from django.http import HttpRequest, HttpResponse

    from config.requestid import RequestIdMiddleware

    formatter = logcontext.JsonFormatter()
    lines: list[dict[str, object]] = []

    def view(request: HttpRequest) -> HttpResponse:
        lines.append(json.loads(formatter.format(_record("serving"))))
        return HttpResponse("ok")

    request = HttpRequest()
    request.META["HTTP_X_REQUEST_ID"] = "req-42"
    response = RequestIdMiddleware(view)(request)

    assert response["X-Request-Id"] == "req-42"
    assert lines[0]["request_id"] == "req-42"
    assert "request_id" not in json.loads(formatter.format(_record("after")))
