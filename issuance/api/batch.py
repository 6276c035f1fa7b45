"""The shapes of batch calls: the body, each item as the single-entry call would check it, and
the answer `{results: [{status: {code, detail}, entry}, ...]}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def entry_fields(item: Any, *, partial: bool = False) -> dict[str, Any] | HallmarkError:
    """An entry body checked for shape as POST (or PATCH) checks it; its 400 as the item's."""
    shape = EntryInputSerializer(data=item, partial=partial)
    if not shape.is_valid():
        return InvalidBatchItem(flatten_detail(shape.errors))
    return dict(shape.validated_data)


def entry_change(item: Any) -> EntryChange | HallmarkError:
    """`{id, ...fields}`: the id as written (looked up by the service), the fields as PATCH."""
    if not isinstance(item, dict):
        return InvalidBatchItem("each item is an object {id, ...fields to change}")
    fields = dict(item)
    entry_id = fields.pop("id", None)
    if not isinstance(entry_id, str):
        return InvalidBatchItem("id: each item names the entry to change by its id")
    return EntryChange(entry_id=entry_id, changes=entry_fields(fields, partial=True))


def entry_id(item: Any) -> str | HallmarkError:
    if not isinstance(item, str):
        return InvalidBatchItem("ids holds entry ids (strings)")
    return item


def batch_answer(results: Sequence[ItemResult]) -> dict[str, Any]:
    return {
        "results": [
            {
                "status": {"code": r.code, "detail": r.detail},
                "entry": EntrySerializer(r.entry).data if r.entry is not None else None,
            }
            for r in results
        ]
    }
