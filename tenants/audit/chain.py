"""The hash chain's canonical encoding: what a link's SHA-256 covers, byte for byte.

A link's hash is SHA-256 over a JSON object with sorted keys and no whitespace (UTF-8) of
every field of the event, its chain, its sequence number and the previous link's hash. The
detail is normalised the way PostgreSQL's jsonb gives it back (an integral float is an
integer), so a row read back hashes as it was written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from typing import Any

ENCODING_VERSION = 1
GENESIS_HASH = "0" * 64
PLATFORM_CHAIN = "platform"


def chain_key(tenant_id: uuid.UUID | str | None) -> str:
    """The chain a tenant's events belong to: its UUID hex, or "platform" for none."""
    if tenant_id is None:
        return PLATFORM_CHAIN
    if isinstance(tenant_id, uuid.UUID):
        return tenant_id.hex
    return uuid.UUID(str(tenant_id)).hex


def normalise_detail(value: Any) -> Any:
    """`value` as jsonb returns it: integral floats as integers, tuples as lists, str keys."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("audit detail cannot hold NaN or infinity")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): normalise_detail(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise_detail(v) for v in value]
    raise TypeError(f"audit detail values must be JSON, got {type(value).__name__}")


def timestamp(at: dt.datetime) -> str:
    """The instant as the chain encodes it: UTC, microseconds, ISO 8601."""
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


# The fields each link hashes besides its chain (`link_hash`'s keyword arguments but
# `tenant_id`), in the order every listing, export and insert uses.
LINKED_FIELDS = (
    "tenant_slug",
    "sequence",
    "at",
    "actor",
    "action",
    "target",
    "outcome",
    "source",
    "request_id",
    "detail",
    "prev_hash",
)


def link_hash(
    *,
    tenant_id: uuid.UUID | str | None,
    tenant_slug: str,
    sequence: int,
    at: dt.datetime,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    source: str,
    request_id: str,
    detail: Any,
    prev_hash: str,
) -> str:
    """The SHA-256 (hex) of one link's canonical encoding."""
    document = {
        "v": ENCODING_VERSION,
        "chain": chain_key(tenant_id),
        "tenant_slug": tenant_slug,
        "sequence": sequence,
        "at": timestamp(at),
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "source": source,
        "request_id": request_id,
        "detail": normalise_detail(detail),
        "prev_hash": prev_hash,
    }
    encoded = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()
    return hashlib.sha256(encoded).hexdigest()
