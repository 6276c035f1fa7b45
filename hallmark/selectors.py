"""Selectors: `type:value` facts about a node or workload, matched by subset."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hallmark.errors import InvalidSelector

_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# Characters below 0x20: one regex search, not a Python loop over every character (the
# Workload API builds each caller's selectors on every call).
_CONTROL = re.compile(r"[\x00-\x1f]")
MAX_VALUE_LENGTH = 1024


@dataclass(frozen=True, order=True)
class Selector:
    """One selector, such as `unix:uid:1000` (type `unix`, value `uid:1000`)."""

    type: str
    value: str

    def __post_init__(self) -> None:
        if not _TYPE.match(self.type):
            raise InvalidSelector(
                f"selector type {self.type!r} must be lowercase letters, digits, '_' or '-'"
            )
        if not self.value:
            raise InvalidSelector(f"selector {self.type!r} has an empty value")
        if len(self.value) > MAX_VALUE_LENGTH:
            raise InvalidSelector(f"selector value is longer than {MAX_VALUE_LENGTH} characters")
        if _CONTROL.search(self.value):
            raise InvalidSelector("selector value contains control characters")

    @classmethod
    def parse(cls, text: str) -> Selector:
        if not isinstance(text, str):
            raise InvalidSelector("a selector must be a string 'type:value'")
        kind, sep, value = text.partition(":")
        if not sep:
            raise InvalidSelector(f"selector {text!r} is not 'type:value' (e.g. 'unix:uid:1000')")
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


def parse_selectors(texts: Iterable[str]) -> frozenset[Selector]:
    return frozenset(Selector.parse(t) for t in texts)


def matches(required: Iterable[Selector], found: Iterable[Selector]) -> bool:
    """An entry matches when its selectors are a non-empty subset of what attestation found."""
    required_set = frozenset(required)
    return bool(required_set) and required_set <= frozenset(found)
