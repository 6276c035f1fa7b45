"""What every workload attestor plugin shares: its settings reader, errors and selectors.

A plugin is configured from its `[workload_attestor.<type>]` table of the agent's TOML file
and attests a process by pid, blocking (the agent runs it in a thread). It answers no
selectors for a process it has nothing to say about (the docker attestor and a process on
the host) and raises PluginError when it should have something to say but cannot find out
(the Docker daemon is down, the kubelet refuses): the call then fails rather than going on
with fewer selectors than the workload is owed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol

from attestors.workload.unix import WorkloadAttestationError
from hallmark.errors import HallmarkError, InvalidSelector
from hallmark.selectors import Selector

_log = logging.getLogger(__name__)


class AttestorConfigError(HallmarkError):
    """A `[workload_attestor.<type>]` table that cannot be used."""

    code = "invalid_workload_attestor_config"


class PluginError(WorkloadAttestationError):
    """A configured attestor could not attest a process it is responsible for."""

    code = "workload_attestor_failed"


class WorkloadAttestorPlugin(Protocol):
    """One configured workload attestor."""

    name: ClassVar[str]

    def attest(self, pid: int) -> frozenset[Selector]: ...


class Settings:
    """Typed reads of one attestor's table; unknown keys are refused by `finish`."""

    def __init__(self, name: str, table: Mapping[str, Any]) -> None:
        if not isinstance(table, Mapping):
            raise AttestorConfigError(f"[workload_attestor.{name}] must be a table")
        self.name = name
        self._table = table
        self._read: set[str] = set()

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._table.get(key)

    def raw(self, key: str) -> Any:
        """The value as written (the caller checks its type)."""
        return self._get(key)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self._get(key)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            raise AttestorConfigError(
                f"[workload_attestor.{self.name}] {key} must be a string, not "
                f"{type(value).__name__}"
            )
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise AttestorConfigError(
                f"[workload_attestor.{self.name}] {key} must be true or false"
            )
        return value

    def number(self, key: str, default: float, *, minimum: float = 0) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise AttestorConfigError(
                f"[workload_attestor.{self.name}] {key} must be a number, at least {minimum}, "
                f"not {value!r}"
            )
        return float(value)

    def refuse(self, key: str, why: str) -> None:
        """Fail when `key` is set: a SPIRE setting this agent deliberately does not offer."""
        if self._get(key) is not None:
            raise AttestorConfigError(
                f"[workload_attestor.{self.name}] {key} is not supported: {why}",
                code="unsupported_workload_attestor_setting",
            )

    def finish(self) -> None:
        unknown = sorted(set(self._table) - self._read)
        if unknown:
            raise AttestorConfigError(
                f"[workload_attestor.{self.name}] has unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self._read))}"
            )


def selectors(kind: str, values: Iterable[str]) -> frozenset[Selector]:
    """Selectors of type `kind`; a value no selector can hold is logged and left out.

    Leaving one out is safe (matching is by subset: fewer selectors match fewer entries),
    and such a value (over 1024 characters, or with control characters) could not have been
    registered in an entry anyway.
    """
    found: set[Selector] = set()
    for value in values:
        try:
            found.add(Selector(kind, value))
        except InvalidSelector as exc:
            _log.warning("no %s selector for value %.60r...: %s", kind, value, exc.detail)
    return frozenset(found)
