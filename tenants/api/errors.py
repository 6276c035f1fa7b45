"""Every API error is JSON `{code, detail}` with a stable snake_case code."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from hallmark.errors import HallmarkError

log = logging.getLogger("hallmark.api")
DATABASE_UNAVAILABLE = {
    "code": "database_unavailable",
    "detail": "the database cannot be reached right now; retry shortly",
}

REQUEST_TOO_LARGE = {
    "code": "request_too_large",
    "detail": "the request body is larger than this server accepts",
}


class ApiError(exceptions.APIException):
    """An error with a stable code; raise it from services or views."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = status
        self.error_code = code


_CODES: dict[type[Exception], str] = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "malformed_request",
    exceptions.ValidationError: "invalid_request",
}


def flatten_detail(detail: Any) -> str:
    """A validation error's messages as the one `detail` string the answers carry."""
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {flatten_detail(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return " ".join(flatten_detail(v) for v in detail)
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, HallmarkError):
        status_code = int(getattr(exc, "http_status", status.HTTP_400_BAD_REQUEST))
        if status_code >= status.HTTP_500_INTERNAL_SERVER_ERROR:
            log.warning("answered %s %s: %s", status_code, exc.code, exc.detail)
        return Response({"code": exc.code, "detail": exc.detail}, status=status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(REQUEST_TOO_LARGE, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, OperationalError | InterfaceError):
        log.warning("database unavailable: %s", exc)
        return Response(DATABASE_UNAVAILABLE, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response  # DRF answers its own exceptions only (Http404 and co. made so above)
    # ApiError, and DRF errors raised with a stable code of their own (InvalidToken), say it
    code = getattr(exc, "error_code", None) or next(
        (c for cls, c in _CODES.items() if isinstance(exc, cls)), "error"
    )
    # From the exception, not DRF's response.data, which wraps a plain message as
    # {"detail": message} (flattened, "detail: message"); lists and dicts are the same in both.
    body: dict[str, Any] = {"code": code, "detail": flatten_detail(exc.detail)}
    if isinstance(exc, exceptions.ValidationError) and isinstance(response.data, dict):
        body["fields"] = response.data
    if code == "not_authenticated":
        body["detail"] = "send 'Authorization: Bearer <tenant API token>' (signup returns one)"
    response.data = body
    return response
