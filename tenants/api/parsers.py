"""The JSON parser of the REST API: bounded in size (Django's limit) and in nesting depth.

DRF ≥ 3.17.2 reads JSON bodies through `request.body`, so Django's
`DATA_UPLOAD_MAX_MEMORY_SIZE` (`HALLMARK_MAX_REQUEST_BODY_BYTES`) refuses an oversized body
before it is parsed (413 `request_too_large`, see `tenants.api.errors`). What is left to bound
is depth: Python's JSON decoder recurses once per level and raises `RecursionError` on a body
of 100,000 `[`, and a document nested a few hundred levels deep parses but breaks later when
it is serialised again. No API document of Hallmark nests more than a handful of levels.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 32


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, answering too-deep documents with 400 instead of a 500."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: dict[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
        if json_depth_exceeds(data):
            raise ParseError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
        return data
