"""Hallmark's REST API as the registrar uses it: the trust domain, the entries, the batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import requests

BATCH_LIMIT = 500  # DESIGN.md: at most 500 items a batch call


class HallmarkError(Exception):
    """A call the plane refused as a whole (or could not answer)."""

    def __init__(self, message: str, *, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class HallmarkApi:
    """One tenant's API with one bearer token (a registrar-scoped API token)."""

    def __init__(
        self, url: str, token: str, *, ca_path: str | None = None, timeout: float = 60.0
    ) -> None:
        self.base = url.rstrip("/") + "/api/v1/"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        # Given on every call: a session's `verify` loses to REQUESTS_CA_BUNDLE in requests.
        self.verify: str | bool = ca_path or True

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            answer = self.session.request(method, self.base + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise HallmarkError(f"{method} {path}: {exc}") from exc
        if answer.status_code >= 400:
            try:
                error = answer.json()
            except ValueError:
                error = {"code": "", "detail": answer.text[:200]}
            raise HallmarkError(
                f"{method} {path}: HTTP {answer.status_code} {error.get('code')}: "
                f"{error.get('detail')}",
                code=str(error.get("code", "")),
                status=answer.status_code,
            )
        return answer.json() if answer.content else None

    def trust_domain(self) -> str:
        return str(self._call("GET", "trust-domain")["name"])

    def entries(self) -> list[dict[str, Any]]:
        answer = self._call("GET", "entries")
        if isinstance(answer, dict) and "results" in answer:
            return list(answer["results"])
        return list(answer)

    def batch(self, action: str, items: Sequence[Any]) -> list[dict[str, Any]]:
        """`action` is create, update or delete; the results, one per item, in order, over
        as many calls as the batch limit needs."""
        key = "ids" if action == "delete" else "entries"
        results: list[dict[str, Any]] = []
        for chunk in _chunks(items, BATCH_LIMIT):
            answer = self._call("POST", f"entries/batch-{action}", {key: list(chunk)})
            results.extend(answer["results"])
        return results
