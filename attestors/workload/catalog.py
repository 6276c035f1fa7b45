"""The workload attestor catalog: every configured attestor runs, and their selectors unite.

The agent's TOML file turns attestors on with a table each, `[workload_attestor.unix]`,
`[workload_attestor.docker]`, `[workload_attestor.k8s]`, `[workload_attestor.systemd]`
(as SPIRE's agent runs exactly the WorkloadAttestor plugins it is configured with). A file
with no `workload_attestor` table at all runs `unix` alone, as the agent always has.

All configured attestors run for each call, at once; if any of them fails, the call fails
with that attestor's reason: going on with the others' selectors could give the workload
an identity its full set of selectors would not (an entry that needs `k8s:ns:prod` and
`unix:uid:0` would not match, but one needing only `unix:uid:0` would, though the workload
may be a pod that entry was never meant for). Whatever runs, the connection's process is
checked to be the same process image before and after (attestors.workload.process), so
selectors read from a recycled pid are never used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

from attestors.workload import process, unix
from attestors.workload.docker import DockerAttestor
from attestors.workload.k8s import K8sAttestor
from attestors.workload.plugin import AttestorConfigError, PluginError, WorkloadAttestorPlugin
from attestors.workload.systemd import SystemdAttestor
from hallmark.selectors import Selector

Attestor: TypeAlias = Callable[[process.ConnectedProcess], Awaitable[frozenset[Selector]]]
PLUGINS: dict[str, Callable[[Mapping[str, Any]], WorkloadAttestorPlugin]] = {
    "docker": DockerAttestor,
    "k8s": K8sAttestor,
    "systemd": SystemdAttestor,
}
TYPES = ("unix", *PLUGINS)


def check_tables(tables: Any) -> dict[str, dict[str, Any]]:
    """The `workload_attestor` tables, checked for shape (types known, each a table)."""
    if tables is None:
        return {}
    if not isinstance(tables, Mapping):
        raise AttestorConfigError("workload_attestor must hold tables: [workload_attestor.k8s]")
    unknown = sorted(set(tables) - set(TYPES))
    if unknown:
        raise AttestorConfigError(
            f"unknown workload attestor(s) {', '.join(unknown)}; known: {', '.join(TYPES)}",
            code="unknown_workload_attestor",
        )
    checked: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise AttestorConfigError(f"[workload_attestor.{name}] must be a table")
        checked[name] = dict(table)
    return checked


class WorkloadAttestors:
    """The configured attestors; `bind` makes the Workload API's attestor from them."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        checked = check_tables(tables) or {"unix": {}}
        unix_table = checked.get("unix")
        if unix_table:
            raise AttestorConfigError(
                "[workload_attestor.unix] takes no settings here; the executable hash limit "
                "is the agent's max_exe_hash_bytes",
            )
        self.unix_enabled = unix_table is not None
        self.plugins: Sequence[WorkloadAttestorPlugin] = [
            PLUGINS[name](table) for name, table in checked.items() if name != "unix"
        ]

    @property
    def names(self) -> list[str]:
        return (["unix"] if self.unix_enabled else []) + [p.name for p in self.plugins]

    def bind(self, unix_attestor: Attestor) -> Attestor:
        """The attestor for the Workload API, given the server's own unix attestation."""
        if not self.plugins:
            return unix_attestor  # unix alone: the server's own path, unchanged

        async def attest(caller: process.ConnectedProcess) -> frozenset[Selector]:
            await asyncio.to_thread(process.check_same_process, caller)
            calls: list[Awaitable[frozenset[Selector]]] = []
            names: list[str] = []
            if self.unix_enabled:
                calls.append(unix_attestor(caller))
                names.append("unix")
            for plugin in self.plugins:
                calls.append(asyncio.to_thread(plugin.attest, caller.pid))
                names.append(plugin.name)
            results = await asyncio.gather(*calls, return_exceptions=True)
            failures = [
                (name, result)
                for name, result in zip(names, results, strict=True)
                if isinstance(result, BaseException)
            ]
            for _, error in failures:
                if isinstance(error, process.CallerChangedError):
                    raise error
            if failures:
                raise _failure(*failures[0])
            found: set[Selector] = set()
            for result in results:
                assert isinstance(result, frozenset)
                found.update(result)
            # Selectors read from a pid that now belongs to another process are not the
            # caller's: check again after reading, as unix attestation does.
            await asyncio.to_thread(process.check_same_process, caller)
            return frozenset(found)

        return attest


def _failure(name: str, error: BaseException) -> unix.WorkloadAttestationError:
    if isinstance(error, unix.WorkloadAttestationError):
        detail = error.detail if error.detail.startswith(f"{name}:") else f"{name}: {error.detail}"
        return PluginError(detail, code=error.code)
    if isinstance(error, Exception):
        return PluginError(f"{name}: {type(error).__name__}: {error}")
    raise error  # KeyboardInterrupt, SystemExit, CancelledError: not ours to turn into a status
