"""A small JSON client of Hallmark's REST API (urllib; no Django, no redirects followed)."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from config.spirecli.credentials import Target, no_token_message
from config.spirecli.flags import UsageError

API_PREFIX = "/api/v1/"
USER_AGENT = "hallmark-cli/1"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


class ApiError(Exception):
    """The API answered an error `{code, detail}` (or could not be reached: status 0)."""

    def __init__(
        self, status: int, code: str, detail: str, *, hint: str = "", retry_after: str = ""
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.hint = hint
        self.retry_after = retry_after

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"code": self.code, "detail": self.detail}
        if self.status:
            document["status"] = self.status
        if self.hint:
            document["hint"] = self.hint
        return document


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the JSON document, or the text of a non-JSON answer
    content_type: str


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would replay the Authorization header to wherever a redirect points: refuse."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_RefuseRedirects())


def part(text: str) -> str:
    """One URL path segment, quoted (an entry id, a trust domain)."""
    return urllib.parse.quote(text, safe="")


class Api:
    """Calls under `<api_url>/api/v1/` with `Authorization: Bearer <token>` when a token is set."""

    def __init__(self, target: Target, *, timeout: float | None = None) -> None:
        self.target = target
        self.timeout = timeout or float(os.environ.get("HALLMARK_API_TIMEOUT", "30"))
        self._warned = False

    @classmethod
    def with_token(cls, target: Target) -> Api:
        if not target.token:
            raise UsageError(no_token_message(target))
        return cls(target)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        auth: bool = True,
        accept: str = "application/json",
    ) -> Answer:
        url = self.target.api_url + API_PREFIX + path
        given = {k: v for k, v in (query or {}).items() if v}
        if given:
            url += "?" + urllib.parse.urlencode(given)
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth and self.target.token:
            self._warn_plain_http()
            headers["Authorization"] = f"Bearer {self.target.token}"
        # The scheme is http or https: normalise_url refuses anything else.
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return _answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            raw = error.read()
            answer = _answer(error.code, error.headers, raw)
            raise self._error(answer, error.headers) from None
        except (TimeoutError, urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ApiError(
                0,
                "api_unreachable",
                f"cannot reach {self.target.api_url}: {reason}",
                hint="is the control plane (`hallmark up`) running there? Set HALLMARK_API_URL "
                "to the API's address if it is elsewhere.",
            ) from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs).body

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.call("POST", path, body=body if body is not None else {}, **kwargs).body

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body=body).body

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path).body

    def list_all(self, path: str, query: Mapping[str, str] | None = None) -> Iterator[Any]:
        """Every item of a list answer: a bare list, or pages `{results, next_cursor}`."""
        params = dict(query or {})
        while True:
            page = self.get(path, query=params)
            if isinstance(page, list):
                yield from page
                return
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise ApiError(200, "unexpected_answer", f"GET {path} answered no list")
            yield from page["results"]
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = str(cursor)

    def _warn_plain_http(self) -> None:
        parts = urllib.parse.urlsplit(self.target.api_url)
        if self._warned or parts.scheme == "https" or parts.hostname in LOOPBACK_HOSTS:
            return
        self._warned = True
        print(
            f"warning: sending the API token to {parts.hostname} over plain http; "
            "use an https:// HALLMARK_API_URL outside a test network",
            file=sys.stderr,
        )

    def _error(self, answer: Answer, headers: Any) -> ApiError:
        body = answer.body
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            code, detail = body["code"], str(body.get("detail", ""))
        elif 300 <= answer.status < 400:
            code = "redirected"
            detail = (
                f"the API answered {answer.status} to {headers.get('Location', '?')}; "
                "set HALLMARK_API_URL to the final address (redirects are not followed, so "
                "the token is never sent elsewhere)"
            )
        else:
            code = f"http_{answer.status}"
            text = body if isinstance(body, str) else json.dumps(body)
            detail = (text.strip().splitlines() or ["(empty answer)"])[0][:200]
        return ApiError(
            answer.status,
            code,
            detail,
            hint=_hint(code, self.target),
            retry_after=str(headers.get("Retry-After", "") or ""),
        )


def _answer(status: int, headers: Any, raw: bytes) -> Answer:
    content_type = str(headers.get("Content-Type", "") or "")
    text = raw.decode("utf-8", errors="replace")
    body: Any = text
    if "json" in content_type and text:
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    elif not text:
        body = None
    return Answer(status, body, content_type)


def _hint(code: str, target: Target) -> str:
    if code in ("invalid_token", "authentication_failed", "not_authenticated"):
        where = target.token_source or "no token"
        return (
            f"the API refused the token (from {where}): export a valid HALLMARK_API_TOKEN, "
            "or run `hallmark login` again"
        )
    if code == "permission_denied":
        return "this token's role does not allow that; ask an owner or admin of the tenant"
    return ""
