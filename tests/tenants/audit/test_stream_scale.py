"""A 100,000-event trail streams out in bounded memory (jsonl and csv), and verifies."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from tests.tenants.audit.conftest import sql

pytestmark = pytest.mark.django_db(transaction=True)
EVENTS = 100_000
# Loading 100,000 rows (and their JSON) at once takes well over 100 MB of Python objects;
# streaming holds one chunk of rows and one ~64 KB piece of output at a time.
PEAK_BYTES = 24 * 1024 * 1024


def _bulk_trail(tenant) -> None:  # type: ignore[no-untyped-def]
    """100,000 events written straight into the table (their links need not verify here)."""
    sql(
        "INSERT INTO audit_auditevent (tenant_id, tenant_slug, sequence, at, actor, action, "
        "target, outcome, source, request_id, detail, prev_hash, hash) "
        "SELECT %s, %s, 1000 + n, now(), 'token:bench', 'entry.create', 'spiffe://x/workload/' || n, "
        "'success', '10.0.0.1', md5(n::text), jsonb_build_object('n', n), "
        "repeat('0', 64), repeat('f', 64) FROM generate_series(1, %s) AS n",
        [tenant.pk, tenant.slug, EVENTS],
    )


TRACED_CHUNKS = 40  # the first chunks are traced: a trail loaded up front shows there


def _read(answer, *, whole: bool = True) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """Lines and chunks of a streamed answer, and the peak of Python allocations while its
    first chunks were made (tracing every allocation of all 100,000 rows would be slow).
    With `whole` False, reading stops (and the stream is closed) after those chunks."""
    gc.collect()
    tracemalloc.start()
    lines = chunks = peak = 0
    try:
        for chunk in answer.streaming_content:
            chunks += 1
            lines += chunk.count(b"\n")
            if chunks == TRACED_CHUNKS:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                if not whole:
                    break
    finally:
        if tracemalloc.is_tracing():
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        answer.close()
    return lines, chunks, peak


def test_a_100k_event_export_streams_in_bounded_memory(tenant_a, tenant_b) -> None:
    # given a tenant with 100,000 events, and another tenant's trail beside it
    _bulk_trail(tenant_a.tenant)

    # when the JSON-lines export is read chunk by chunk, dropping each
    answer = tenant_a.client.get("/api/v1/audit-events", {"format": "jsonl"})
    assert answer.status_code == 200 and answer.streaming
    lines, chunks, peak = _read(answer)

    # then every event came out (plus signup's), in many chunks, and the process never held
    # more than a small bounded amount at once
    assert lines >= EVENTS
    assert chunks > TRACED_CHUNKS
    assert peak < PEAK_BYTES, f"jsonl: peak {peak / 1e6:.1f} MB while streaming"

    # and the CSV export starts just as lean (its whole output is checked on a small trail
    # in test_api.py; reading 100,000 rows twice would only double this test's time)
    answer = tenant_a.client.get("/api/v1/audit-events", {"format": "csv"})
    assert answer.status_code == 200 and answer.streaming
    _, chunks, peak = _read(answer, whole=False)
    assert chunks == TRACED_CHUNKS
    assert peak < PEAK_BYTES, f"csv: peak {peak / 1e6:.1f} MB while streaming"

    # and B's export holds none of A's
    other = tenant_b.client.get("/api/v1/audit-events", {"format": "jsonl"})
    assert b"token:bench" not in b"".join(other.streaming_content)
