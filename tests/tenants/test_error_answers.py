"""The REST API's error answers (tenants.api.errors): every error is {code, detail} with its
status, a validation error names its fields, the platform's own failures are logged."""

from __future__ import annotations

import logging

import pytest
from django.db import OperationalError

from hallmark.errors import HallmarkError
from tenants.api.errors import exception_handler

pytestmark = pytest.mark.django_db(transaction=True)


class _Failure(HallmarkError):
    code = "key_manager_unavailable"

    def __init__(self, status: int) -> None:
        super().__init__("the key manager did not answer")
        self.http_status = status


def test_a_validation_error_names_each_field_and_its_messages(api) -> None:
    answer = api.post("/api/v1/signup", {"name": "x"}, format="json")

    body = answer.json()
    assert answer.status_code == 400 and body["code"] == "invalid_request"
    assert "trust_domain: This field is required." in body["detail"]
    assert "password: This field is required." in body["detail"]
    assert body["fields"]["trust_domain"] == ["This field is required."]


@pytest.mark.parametrize(("status", "logged"), [(500, True), (503, True), (400, False)])
def test_a_platform_failure_is_logged_and_a_callers_mistake_is_not(
    caplog, status: int, logged: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="hallmark.api"):
        answer = exception_handler(_Failure(status), {})

    assert answer is not None and answer.status_code == status
    assert answer.data == {
        "code": "key_manager_unavailable",
        "detail": "the key manager did not answer",
    }
    warnings = [r for r in caplog.records if r.name == "hallmark.api"]
    assert bool(warnings) is logged


def test_a_database_failure_is_503_database_unavailable_without_its_text() -> None:
    answer = exception_handler(OperationalError("connection to 10.0.0.5 refused"), {})

    assert answer is not None and answer.status_code == 503
    assert answer.data["code"] == "database_unavailable"
    assert "10.0.0.5" not in str(answer.data)
