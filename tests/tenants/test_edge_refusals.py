"""Signups (and API logins) from a client its limit refused are answered before Django
(tenants.edgerefusals).

Requests go through the web tier's real WSGI application (config.wsgi, as gunicorn serves it)
and its real Redis; Django's `request_started` signal tells which ones reached Django.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.signals import request_started

from tenants import ratelimit
from tenants.edgerefusals import RefusalTable

pytestmark = pytest.mark.django_db(transaction=True)
BAD_BODY = {"name": "x", "trust_domain": "Bad!", "email": "x@x.test", "password": "short"}


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_code = int(status.split(maxsplit=1)[0])
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def _call(method: str, path: str, address: str, body: bytes = b"", **extra: str) -> Answer:
    """One request through config.wsgi.application, as gunicorn hands it over."""
    from config.wsgi import application

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": address,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **extra,
    }
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks = application(environ, lambda status, headers, *_: started.append((status, headers)))
    try:
        body_out = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    status, headers = started[0]
    return Answer(status, headers, body_out)


def _signup(address: str, body: dict[str, str] | None = None, **extra: str) -> Answer:
    return _call("POST", "/api/v1/signup", address, json.dumps(body or BAD_BODY).encode(), **extra)


def _address() -> str:
    """A client address of its own (TEST-NET-3), its Redis count gone."""
    address = f"203.0.113.{random.randrange(1, 255)}"
    _redis().delete(_key(address))
    return address


def _redis() -> redis.Redis:
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL)


def _key(address: str) -> str:
    return ratelimit.KEY.format(scope="signup", client=address)


@pytest.fixture
def reaching_django() -> Iterator[list[object]]:
    """The requests that reached Django's handler, as they arrive."""
    seen: list[object] = []

    def count(sender: object, **_: object) -> None:
        seen.append(sender)

    request_started.connect(count)
    yield seen
    request_started.disconnect(count)


def test_a_refused_clients_next_signups_reach_neither_redis_nor_django(
    settings, reaching_django
) -> None:
    # given a client at its limit of one signup an hour, refused once by the Redis count
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    address = _address()
    assert _signup(address).status_code == 400
    first_refusal = _signup(address)
    assert first_refusal.status_code == 429
    counted, through_django = int(_redis().get(_key(address))), len(reaching_django)
    assert counted == 2 and through_django == 2

    # when it sends more signups, one of them not even JSON
    answers = [_signup(address) for _ in range(4)]
    answers.append(_call("POST", "/api/v1/signup", address, b"{not json"))

    # then each is the same 429 rate_limited with Retry-After, and none reached Redis's count
    # or Django
    for answer in answers:
        assert answer.status_code == 429
        assert answer.json()["code"] == "rate_limited"
        wait = int(answer.headers["retry-after"])
        assert 0 < wait <= 3600
        # the text of Django's refusal, with this answer's wait
        assert answer.body == first_refusal.body.replace(
            first_refusal.headers["retry-after"].encode(), str(wait).encode()
        )
    assert int(_redis().get(_key(address))) == counted
    assert len(reaching_django) == through_django


def test_the_refusal_before_django_carries_the_headers_of_djangos_refusal(settings) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    address = _address()
    _signup(address)
    by_django = _signup(address)
    before_django = _signup(address, HTTP_X_REQUEST_ID="flood-request-1")

    # (Django's answer leaves the length to gunicorn; this one says it)
    assert set(before_django.headers) - {"content-length"} == set(by_django.headers)
    assert int(before_django.headers["content-length"]) == len(before_django.body)
    for name, value in by_django.headers.items():
        if name not in ("retry-after", "x-request-id"):
            assert before_django.headers[name] == value, name
    assert before_django.headers["x-request-id"] == "flood-request-1"


def test_other_clients_and_other_calls_of_a_refused_client_still_reach_django(
    settings, reaching_django
) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    refused, other = _address(), _address()
    _signup(refused)
    assert _signup(refused).status_code == 429
    reached = len(reaching_django)

    assert _signup(other).status_code == 400  # another address: counted, and admitted
    assert _call("GET", "/api/v1/signup", refused).status_code == 405  # not a signup
    assert len(reaching_django) == reached + 2


def test_a_forged_x_forwarded_for_does_not_get_past_the_refusal(settings) -> None:
    settings.SIGNUP_RATE_LIMIT = "1/3600"
    address = _address()
    _signup(address)
    assert _signup(address).status_code == 429

    forged = _signup(address, HTTP_X_FORWARDED_FOR=_address())

    assert forged.status_code == 429


def test_once_the_window_ends_the_client_is_counted_by_redis_again(
    settings, reaching_django
) -> None:
    # given a client refused in a one-second window
    settings.SIGNUP_RATE_LIMIT = "1/1"
    address = _address()
    _signup(address)
    while _signup(address).status_code != 429:  # a window may end between the two
        pass
    # when that window has ended
    time.sleep(1.1)
    reached = len(reaching_django)

    # then its next signup is Django's again, counted afresh in Redis
    assert _signup(address).status_code == 400
    assert len(reaching_django) == reached + 1
    assert int(_redis().get(_key(address))) == 1


def test_an_address_past_its_failed_login_limit_is_refused_before_django(
    settings, reaching_django
) -> None:
    # given an address whose failed logins reached the limit, refused once by Django
    settings.LOGIN_RATE_LIMIT = "2/600"
    address = _address()
    _redis().delete(ratelimit.KEY.format(scope="login-address", client=address))

    def login() -> Answer:
        body = {"email": f"nobody-{random.randrange(10**9)}@example.com", "password": "no"}
        return _call("POST", "/api/v1/auth/login", address, json.dumps(body).encode())

    assert [login().status_code for _ in range(2)] == [401, 401]
    by_django = login()
    assert by_django.status_code == 429
    reached = len(reaching_django)

    # when it tries again
    before_django = login()

    # then the answer is Django's, word for word but for its wait, and Django never saw it
    assert len(reaching_django) == reached
    assert before_django.status_code == 429
    assert set(before_django.headers) == set(by_django.headers)
    for name, value in by_django.headers.items():
        if name not in ("retry-after", "x-request-id", "content-length"):
            assert before_django.headers[name] == value, name
    wait = before_django.headers["retry-after"]
    assert before_django.body == by_django.body.replace(
        by_django.headers["retry-after"].encode(), wait.encode()
    )


def test_the_table_is_bounded_and_keeps_the_refusals_that_end_last() -> None:
    table = RefusalTable(max_sources=10)
    for n in range(11):
        table.remember("signup", f"192.0.2.{n}", 100 + n)
    table.remember("signup", "192.0.2.99", 0)  # already over

    assert len(table) <= 10
    assert table.seconds_left("signup", "192.0.2.10") > 0
    assert table.seconds_left("signup", "192.0.2.0") == 0
    assert table.seconds_left("signup", "192.0.2.99") == 0
