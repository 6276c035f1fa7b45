"""The shapes of batch calls: the body, each item as the single-entry call would check it, and
the answer `{results: [{status: {code, detail}, entry}, ...]}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings

from hallmark.errors import HallmarkError
from issuance.api.serializers import EntryInputSerializer, EntrySerializer
from issuance.errors import InvalidBatch, InvalidBatchItem
from issuance.services.batch import EntryChange, ItemResult, check_batch_size
from tenants.api.errors import flatten_detail


def batch_items(body: Any, key: str) -> list[Any]:
    """The list under `key`; 400 for another body, no items (`empty_batch`) or too many
    (`batch_too_large`), before any item is looked at."""
    if not isinstance(body, dict) or set(body) != {key} or not isinstance(body[key], list):
        raise InvalidBatch(f'the body must be {{"{key}": [...]}} and nothing else')
    items: list[Any] = body[key]
    check_batch_size(len(items))
    return items


class EntryShapes:
    """Checks entry bodies for shape exactly as POST (or PATCH) does, with one serializer for
    the whole call: DRF builds a serializer's fields on first use, and building them for each
    of 500 items cost more than storing the items."""

    def __init__(self, *, partial: bool = False) -> None:
        self._serializer = EntryInputSerializer(partial=partial)

    def __call__(self, item: Any) -> dict[str, Any] | HallmarkError:
        """The item's fields, or its 400 (`invalid_request`, detail as the single call's)."""
        try:
            return dict(self._serializer.run_validation(item))
        except ValidationError as exc:
            return InvalidBatchItem(flatten_detail(_as_field_errors(exc.detail)))


def _as_field_errors(detail: Any) -> Any:
    # `is_valid()` files a bare message under non_field_errors; run_validation leaves it bare.
    return detail if isinstance(detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: detail}


def entry_creates(items: list[Any]) -> list[dict[str, Any] | HallmarkError]:
    shape = EntryShapes()
    return [shape(item) for item in items]


def entry_changes(items: list[Any]) -> list[EntryChange | HallmarkError]:
    """`{id, ...fields}`: the id as written (looked up by the service), the fields as PATCH."""
    shape = EntryShapes(partial=True)
    changes: list[EntryChange | HallmarkError] = []
    for item in items:
        if not isinstance(item, dict):
            changes.append(InvalidBatchItem("each item is an object {id, ...fields to change}"))
            continue
        fields = dict(item)
        entry_id = fields.pop("id", None)
        if not isinstance(entry_id, str):
            changes.append(InvalidBatchItem("id: each item names the entry to change by its id"))
            continue
        changes.append(EntryChange(entry_id=entry_id, changes=shape(fields)))
    return changes


def entry_ids(items: list[Any]) -> list[str | HallmarkError]:
    return [
        item if isinstance(item, str) else InvalidBatchItem("ids holds entry ids (strings)")
        for item in items
    ]


def batch_answer(results: Sequence[ItemResult]) -> dict[str, Any]:
    """`{results: [{status: {code, detail}, entry}, ...]}`, the entries as GET shows them."""
    entry = EntrySerializer()  # one serializer for all entries (see EntryShapes)
    return {
        "results": [
            {
                "status": {"code": r.code, "detail": r.detail},
                "entry": entry.to_representation(r.entry) if r.entry is not None else None,
            }
            for r in results
        ]
    }
