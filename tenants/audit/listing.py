"""Reading the trail: filters, an opaque keyset cursor (newest first), and streamed exports."""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime

from tenants.api.errors import ApiError
from tenants.audit.chain import LINKED_FIELDS
from tenants.audit.models import AuditEvent

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
STREAM_CHUNK_ROWS = 2000
STREAM_CHUNK_BYTES = 64 * 1024
FIELDS = ("id", *LINKED_FIELDS, "hash")
# as FIELDS, with the tenant's slug under the name `tenant`
CSV_COLUMNS = ("id", "tenant", *LINKED_FIELDS[1:], "hash")
_TEXT_FILTERS = {"action": 100, "actor": 300, "outcome": 32}
_DIGITS = re.compile(r"^[0-9]{1,7}$")


@dataclass(frozen=True)
class Query:
    """A validated listing request."""

    filters: dict[str, Any]
    before_id: int | None
    page_size: int
    format: str


def encode_cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{event_id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        version, _, value = raw.partition(":")
        if version != "v1" or not value.isdigit() or len(value) > 19:
            raise ValueError(raw)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError("invalid_cursor", "cursor is not one this API gave out") from exc


def _instant(name: str, text: str) -> dt.datetime:
    try:
        value = parse_datetime(text)
    except ValueError:
        value = None
    if value is None:
        raise ApiError(
            "invalid_filter", f"{name} must be an ISO 8601 time, e.g. 2026-11-30T06:00:00Z"
        )
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def parse_query(params: Any, *, operator: bool = False) -> Query:
    """The listing request's filters, cursor, page size and format; 400 with a code if bad."""
    filters: dict[str, Any] = {}
    for name, limit in _TEXT_FILTERS.items():
        value = params.get(name)
        if value is None:
            continue
        if not value or len(value) > limit or not value.isprintable():
            raise ApiError("invalid_filter", f"{name} must be 1 to {limit} printable characters")
        filters[name] = value
    if operator and params.get("tenant") is not None:
        slug = params["tenant"]
        if not slug or len(slug) > 63 or not slug.replace("-", "").isalnum():
            raise ApiError("invalid_filter", "tenant must be a tenant's slug")
        filters["tenant_slug"] = slug
    since = _instant("since", params["since"]) if params.get("since") is not None else None
    until = _instant("until", params["until"]) if params.get("until") is not None else None
    if since and until and since > until:
        raise ApiError("invalid_filter", "since must not be after until")
    if since:
        filters["at__gte"] = since
    if until:
        filters["at__lt"] = until
    cursor = params.get("cursor")
    before_id = decode_cursor(cursor) if cursor is not None else None
    size_text = params.get("page_size")
    page_size = DEFAULT_PAGE_SIZE
    if size_text is not None:
        if not _DIGITS.match(size_text) or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
            raise ApiError("invalid_page_size", f"page_size must be 1 to {MAX_PAGE_SIZE}")
        page_size = int(size_text)
    output = params.get("format", "json")
    if output not in ("json", "jsonl", "csv"):
        raise ApiError("invalid_format", "format must be json, jsonl or csv")
    return Query(filters=filters, before_id=before_id, page_size=page_size, format=output)


def filtered(events: QuerySet[AuditEvent], query: Query) -> QuerySet[AuditEvent]:
    events = events.filter(**query.filters)
    if query.before_id is not None:
        events = events.filter(id__lt=query.before_id)
    return events.order_by("-id")


def as_json(row: tuple[Any, ...], *, with_tenant: bool = False) -> dict[str, Any]:
    values = dict(zip(FIELDS, row, strict=True))
    answer = {
        "id": values["id"],
        "at": values["at"].isoformat(),
        "actor": values["actor"],
        "action": values["action"],
        "target": values["target"],
        "outcome": values["outcome"],
        "source": values["source"],
        "detail": values["detail"],
        "prev_hash": values["prev_hash"],
        "hash": values["hash"],
        "sequence": values["sequence"],
        "request_id": values["request_id"],
    }
    if with_tenant:
        answer["tenant"] = values["tenant_slug"] or None
    return answer


def page(
    events: QuerySet[AuditEvent], query: Query, *, with_tenant: bool = False
) -> dict[str, Any]:
    rows = list(filtered(events, query).values_list(*FIELDS)[: query.page_size + 1])
    more = len(rows) > query.page_size
    rows = rows[: query.page_size]
    return {
        "results": [as_json(r, with_tenant=with_tenant) for r in rows],
        "next_cursor": encode_cursor(rows[-1][0]) if more and rows else None,
    }


def stream(
    events: QuerySet[AuditEvent], query: Query, *, with_tenant: bool = False
) -> Iterator[bytes]:
    """The whole filtered trail as JSON lines or CSV, newest first, in ~64 KB chunks.

    Rows come through a server-side cursor a chunk at a time (inside a transaction, so
    PostgreSQL streams them too rather than materialising a WITH HOLD copy).
    """
    rows = filtered(events, query).values_list(*FIELDS)
    buffer = io.StringIO()
    writer = csv.writer(buffer) if query.format == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    with transaction.atomic():
        for row in rows.iterator(chunk_size=STREAM_CHUNK_ROWS):
            item = as_json(row, with_tenant=True)
            if writer is not None:
                writer.writerow(_csv_row(item))
            else:
                if not with_tenant:
                    item.pop("tenant")
                buffer.write(json.dumps(item, separators=(",", ":")) + "\n")
            if buffer.tell() >= STREAM_CHUNK_BYTES:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def _csv_row(item: dict[str, Any]) -> list[Any]:
    values = [item.get(c) for c in CSV_COLUMNS]
    values[CSV_COLUMNS.index("detail")] = json.dumps(item["detail"], separators=(",", ":"))
    return [_defused(v) for v in values]


def _defused(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def tenant_events(tenant_id: uuid.UUID) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(tenant_id=tenant_id)
