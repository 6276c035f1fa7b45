"""How many signups the whole platform provisions at once: a few PostgreSQL advisory locks.

A signup clones a schema, creates keys in the key manager and signs a CA: seconds of CPU
spread over the database, the key manager, the web tier and the agent API. The per-address
rate limit (tenants.ratelimit) bounds how many one address may start in an hour; this bounds
how many run at the same moment across every web replica (`HALLMARK_SIGNUP_CONCURRENCY`, 1
by default), so a burst of admitted signups (one address's hourly allowance sent at once, or
many addresses) takes turns instead of taking the cores the agents' syncs need.

A signup waits up to `HALLMARK_SIGNUP_WAIT` seconds for a slot; then it is answered 503
`busy` with `Retry-After`, before its body is read or its password hashed. The attempt has
already counted against its address's rate limit (every attempt counts), so a flood that
retries on `busy` spends its allowance on refusals, not on provisioning.

A slot is a session-level advisory lock (`pg_try_advisory_lock(class, slot)`) taken on the
request's own database connection and released when the signup ends; PostgreSQL releases it
too when the connection or the process dies, so a crashed worker holds no slot. Advisory
locks are per database: every replica of one platform shares the slots.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse

from tenants.api.errors import ApiError

LOCK_CLASS = 0x484D  # "HM": the first key of the two-key advisory lock, the slot the second
POLL_SECONDS = 0.05
RETRY_AFTER_SECONDS = 2
BUSY_DETAIL = "signups are being provisioned; retry shortly"


class SignupBusy(ApiError):
    """503 `busy` with `Retry-After`: every signup slot stayed taken for the wait."""

    def __init__(self) -> None:
        super().__init__("busy", BUSY_DETAIL, 503)
        self.wait = RETRY_AFTER_SECONDS  # DRF's handler sets Retry-After from it


def acquire(*, slots: int, wait: float) -> int | None:
    """Take one of `slots` signup slots on this connection, waiting up to `wait` seconds;
    the slot's number, or None when all stayed taken."""
    deadline = time.monotonic() + max(wait, 0.0)
    with connection.cursor() as cursor:
        while True:
            for slot in range(max(slots, 1)):
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, slot])
                row = cursor.fetchone()
                if row is not None and row[0]:
                    return slot
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)


def release(slot: int) -> None:
    # A connection that broke during the signup took its lock with it.
    with suppress(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, slot])


@contextmanager
def signup_slot() -> Iterator[None]:
    """Hold a signup slot for the block; SignupBusy when none is free within the wait."""
    slot = acquire(slots=settings.SIGNUP_CONCURRENCY, wait=settings.SIGNUP_WAIT_SECONDS)
    if slot is None:
        raise SignupBusy
    try:
        yield
    finally:
        release(slot)


def busy_response() -> JsonResponse:
    """The 503 `busy` answer for middleware (no DRF there)."""
    response = JsonResponse({"code": "busy", "detail": BUSY_DETAIL}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response._has_been_logged = True  # type: ignore[attr-defined] # no log line per refusal
    return response
