"""Refusals answered before Django: clients a rate limit already refused, until its window ends.

The per-client limits of the public edge are counted in Redis (tenants.ratelimit). Once
Redis has said no to a client, the answer for that client stays no until its fixed window
ends: further attempts only raise a count that is already past the limit. This WSGI layer,
in front of Django's application (config.wsgi), remembers such refusals in a small table of
its own process and answers the next attempt from the same client the same 429
`rate_limited` with `Retry-After` (the seconds left in the window), without Redis and without
Django's middleware, URL resolver or view: a flood of refused signups (or of API logins from
an address past its failed-login limit) costs the web tier little more than gunicorn's
handling of each request.

The table only ever holds refusals Redis gave, so it refuses nothing Redis would not
(a client is never refused for longer than Redis's window, and a client's first attempts
always go to Redis). Each gunicorn worker learns on its own first refusal of a client; the
table is bounded (`MAX_SOURCES`): past it, the refusals nearest their end are forgotten, and
those clients are counted by Redis again, which still refuses them. A count reset in Redis
by hand is not seen by a worker that remembers the client until the window it was told ends.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from config import metrics
from config.securityheaders import CONTENT_SECURITY_POLICY
from tenants.audit.context import accepted

MAX_SOURCES = 10_000
# What Django's middleware would have added to the same answer (SecurityMiddleware's and
# console.middleware's headers); the body, Retry-After and X-Request-Id are per answer.
_HEADERS = (
    ("Content-Type", "application/json"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
)


@dataclass(frozen=True)
class Refusal:
    """A limit whose refusals this layer answers: for `POST path`, what Django's 429 says."""

    scope: str  # the limit's scope in tenants.ratelimit (its Redis key)
    route: str  # the route label the request metrics give the view
    detail: str  # the 429's detail, before DRF adds the wait
    headers: tuple[tuple[str, str], ...] = ()  # what the view's answer adds (DRF's)
    # Answered by DRF's view and exception handler (tenants.api.errors): compact JSON, and
    # the detail as flatten_detail words DRF's {"detail": ...}; else by the signup middleware
    # (Django's JsonResponse). tests/tenants/test_edge_refusals.py holds both to Django's.
    by_drf: bool = False


SIGNUP_PATH = "/api/v1/signup"
LOGIN_PATH = "/api/v1/auth/login"
REFUSALS = {
    SIGNUP_PATH: Refusal(
        "signup", "api/v1/signup", "too many requests from this address; retry later"
    ),
    # the address's count of failed logins (tenants.accounts); the per-account count needs
    # the body, and stays Django's
    LOGIN_PATH: Refusal(
        "login-address",
        "api/v1/auth/login",
        "too many failed logins; retry later",
        (("Allow", "POST, OPTIONS"),),
        by_drf=True,
    ),
}
SCOPES = frozenset(refusal.scope for refusal in REFUSALS.values())

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class RefusalTable:
    """(scope, client) → the monotonic time until which the client's limit refuses it."""

    def __init__(self, max_sources: int = MAX_SOURCES) -> None:
        self.max_sources = max_sources
        self._until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def remember(self, scope: str, client: str, seconds: float) -> None:
        """Redis refused `client` for `scope` for `seconds` more."""
        until = time.monotonic() + max(seconds, 0.0)
        with self._lock:
            self._until[(scope, client)] = until
            if len(self._until) > self.max_sources:
                self._shrink()

    def seconds_left(self, scope: str, client: str) -> float:
        """How long `client` is still refused for `scope`; 0 when it is not known to be."""
        until = self._until.get((scope, client))
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            with self._lock:
                if self._until.get((scope, client)) == until:
                    del self._until[(scope, client)]
            return 0.0
        return left

    def forget(self) -> None:
        with self._lock:
            self._until.clear()

    def __len__(self) -> int:
        return len(self._until)

    def _shrink(self) -> None:
        """Drop the ended refusals, then those nearest their end, down to 90% of the bound."""
        now = time.monotonic()
        kept = sorted(
            ((until, key) for key, until in self._until.items() if until > now), reverse=True
        )
        self._until = {key: until for until, key in kept[: self.max_sources * 9 // 10]}


refusals = RefusalTable()


class EdgeRefusals:
    """WSGI middleware: answer a signup or an API login from a client in `refusals` at once
    (see the module docstring); everything else goes to the wrapped application untouched."""

    def __init__(self, app: WsgiApp, table: RefusalTable | None = None) -> None:
        from tenants.ratelimit import client_of  # it imports this module's table

        self.app = app
        self.table = table if table is not None else refusals
        self.client_of = client_of

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            refusal = REFUSALS.get(environ.get("PATH_INFO", ""))
            if refusal is not None:
                left = self.table.seconds_left(refusal.scope, self.client_of(environ))
                if left > 0:
                    return self._refuse(refusal, environ, start_response, left)
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(
        refusal: Refusal, environ: dict[str, Any], start_response: StartResponse, left: float
    ) -> Iterable[bytes]:
        wait = max(1, math.ceil(left))
        body = _body(refusal.detail, wait, by_drf=refusal.by_drf)
        headers = [
            *_HEADERS,
            *refusal.headers,
            ("Content-Length", str(len(body))),
            ("Retry-After", str(wait)),
            ("X-Request-Id", accepted(environ.get("HTTP_X_REQUEST_ID"))),
        ]
        start_response("429 Too Many Requests", headers)
        metrics.HTTP_REQUESTS.labels("POST", refusal.route, "429").inc()
        return [body]


@functools.lru_cache(maxsize=4096)
def _body(detail: str, wait: int, *, by_drf: bool) -> bytes:
    """The JSON of Django's 429 with this detail and wait, word for word (DRF's Throttled
    adds the wait to the detail)."""
    from tenants.ratelimit import RateLimited

    answer = {"code": "rate_limited", "detail": str(RateLimited(detail=detail, wait=wait).detail)}
    # DRF's JSON renderer writes compactly; Django's JsonResponse with json's separators.
    return json.dumps(answer, separators=(",", ":") if by_drf else None).encode()
