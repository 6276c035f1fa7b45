"""Per-client rate limits of the public edge (signup, login), counted in Redis.

Counters live in Redis so a limit holds across every web replica. Each (scope, client) pair
has a fixed window: the first hit creates `hallmark:ratelimit:<scope>:<client>` with the
window as its expiry; the hit that passes the limit answers 429 `rate_limited` with
`Retry-After` set to the seconds left in the window.

A client is its address as the web server saw it (`REMOTE_ADDR`), or, behind
`HALLMARK_TRUSTED_PROXY_COUNT` reverse proxies, the address the outermost trusted proxy put
into `X-Forwarded-For`. IPv6 clients are counted per /64, the block one host usually holds,
so rotating addresses inside it does not reset the count.

If Redis cannot be reached the limited call answers 503 `rate_limiter_unavailable`: an
unbounded signup path during an outage is exactly the abuse window the limit closes.

    from tenants.ratelimit import enforce
    enforce("login", request, limit=settings.LOGIN_RATE_LIMIT)

Signup is counted by `SignupRateLimitMiddleware`, ahead of sessions, CSRF, authentication and
DRF, so a refused signup costs a Redis round trip and a small JSON answer, not the request's
way through the framework. Once Redis has refused a client's signup, the web process answers
its next ones until the window ends before Django, from a table of its own
(tenants.edgerefusals, in front of the application in config.wsgi): no Redis, no middleware.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions

from tenants import edgerefusals, signupgate
from tenants.api.errors import DATABASE_UNAVAILABLE, ApiError
from tenants.events import shared_redis

log = logging.getLogger(__name__)
KEY = "hallmark:ratelimit:{scope}:{client}"
_IPV6_BLOCK = 64

# INCR and set the expiry on the first hit in one step; answer the count and the TTL left.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


@dataclass(frozen=True)
class Rate:
    """At most `count` calls per `seconds` from one client."""

    count: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`"5/3600"`: five calls an hour."""
        count, sep, seconds = text.partition("/")
        try:
            rate = cls(int(count), int(seconds))
        except ValueError:
            rate = None
        if not sep or rate is None or rate.count < 1 or rate.seconds < 1:
            raise ImproperlyConfigured(f"rate {text!r} must be COUNT/SECONDS, e.g. 5/3600")
        return rate


class RateLimited(exceptions.Throttled):
    """429 `rate_limited`; DRF sets `Retry-After` from `wait`."""

    default_detail = "too many requests from this address; retry later"


def client_address(request: HttpRequest) -> str:
    """The client as limits count it (see the module docstring)."""
    return client_of(request.META)


def client_of(meta: Mapping[str, Any]) -> str:
    """`client_address` from a request's META, or a WSGI environ (tenants.edgerefusals)."""
    address = str(meta.get("REMOTE_ADDR", ""))
    proxies = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if proxies > 0:
        forwarded = [a.strip() for a in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
        forwarded = [a for a in forwarded if a]
        if len(forwarded) >= proxies:
            address = forwarded[-proxies]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{_IPV6_BLOCK}", strict=False))
    return str(ip)


def hit(scope: str, client: str, rate: Rate) -> tuple[int, int]:
    """Count one call; answer (calls in this window, seconds left in it)."""
    key = KEY.format(scope=scope, client=client)
    count, ttl = shared_redis().eval(_HIT, 1, key, rate.seconds)
    return int(count), int(ttl)


def enforce(scope: str, request: HttpRequest, *, limit: str | Rate) -> None:
    """Count a call of `scope` from the request's client; 429 once it is over `limit`."""
    rate = limit if isinstance(limit, Rate) else Rate.parse(limit)
    client = client_address(request)
    try:
        count, ttl = hit(scope, client, rate)
    except redis.RedisError as exc:
        log.warning("rate limiter unavailable for %s: %s", scope, exc)
        raise ApiError(
            "rate_limiter_unavailable", "this call cannot be admitted right now; retry shortly", 503
        ) from None
    if count > rate.count:
        if count == rate.count + 1:  # once a window: a flood buys no log line per request
            log.info("rate limit of %s reached by %s", scope, client)
        if scope in edgerefusals.SCOPES:
            # the rest of the window is refused before Django, by this process's table
            edgerefusals.refusals.remember(scope, client, ttl)
        raise RateLimited(wait=max(1, math.ceil(ttl)))


def admit(scope: str, request: HttpRequest, *, limit: str | Rate) -> HttpResponse | None:
    """`enforce` for middleware: None when the call is admitted, else the JSON answer
    (429 `rate_limited` with Retry-After, or 503 `rate_limiter_unavailable`)."""
    try:
        enforce(scope, request, limit=limit)
    except RateLimited as exc:
        response = JsonResponse({"code": "rate_limited", "detail": str(exc.detail)}, status=429)
        response["Retry-After"] = str(exc.wait)
        # enforce logs the first refusal of a window; Django's per-response warning would
        # give a flood a log line per request
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
    except ApiError as exc:
        return JsonResponse(
            {"code": exc.error_code, "detail": str(exc.detail)}, status=exc.status_code
        )
    return None


SIGNUP_PATH = "/api/v1/signup"
ADMITTED = "hallmark_signup_admitted"  # set on a request this middleware counted


class SignupRateLimitMiddleware:
    """Counts `POST /api/v1/signup` per client and answers past the limit at once; an
    admitted signup then waits for one of the platform's signup slots (tenants.signupgate)
    or is answered 503 `busy`.

    It sits before the session, CSRF, authentication and metering middleware and DRF
    (config.settings.MIDDLEWARE): a flood of refused signups reaches none of them. The view
    counts a signup itself only when this middleware did not (tenants.api.views).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path_info == SIGNUP_PATH:
            from django.conf import settings

            refused = admit("signup", request, limit=settings.SIGNUP_RATE_LIMIT)
            if refused is not None:
                return refused
            # Then a platform-wide slot (tenants.signupgate), still before the body is read.
            try:
                slot = signupgate.acquire(
                    slots=settings.SIGNUP_CONCURRENCY, wait=settings.SIGNUP_WAIT_SECONDS
                )
            except (OperationalError, InterfaceError):
                # Django turns a middleware's exception into a 500 before the outer
                # DatabaseUnavailableMiddleware sees it: answer its 503 here.
                return JsonResponse(DATABASE_UNAVAILABLE, status=503)
            if slot is None:
                return signupgate.busy_response()
            setattr(request, ADMITTED, True)
            try:
                return self.get_response(request)
            finally:
                signupgate.release(slot)
        return self.get_response(request)


def reset(scope: str, request: HttpRequest) -> None:
    """Forget a client's count (e.g. after a successful login)."""
    shared_redis().delete(KEY.format(scope=scope, client=client_address(request)))
