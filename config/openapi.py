"""OpenAPI post-processing: document the `{code, detail}` errors every operation can answer."""

from __future__ import annotations

from typing import Any

# DESIGN.md: errors are JSON `{code, detail}` with these statuses, on any call.
ERROR_STATUSES = {
    "400": "Bad input (`code` says what)",
    "401": "No, malformed, unknown or revoked API token",
    "403": "Not allowed (role, quota, suspended tenant)",
    "404": "Not found (also: another tenant's)",
    "409": "Conflicts with the current state",
    "413": "Request too large",
    "429": "Rate limited",
    "502": "An upstream (bundle endpoint, upstream authority) failed",
    "503": "A dependency (database, key manager) is unavailable",
}
ERROR_SCHEMA = {
    "type": "object",
    "description": "An error: a stable snake_case `code` and a human `detail`.",
    "properties": {
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "fields": {"type": "object", "description": "Per-field messages of a validation error"},
    },
    "required": ["code", "detail"],
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def add_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOK: each operation lists the error answers too."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
    return result
