"""The `systemd` workload attestor: the systemd unit the caller runs in, without D-Bus.

SPIRE asks systemd over D-Bus (GetUnitByPID, then the unit's Id and FragmentPath). This
agent reads the same facts without a D-Bus connection, which the agent may not have (in a
container, or before dbus-daemon starts):
- The unit: systemd puts every process of a unit into the unit's own cgroup, and
  `sd_pid_get_unit(3)` / GetUnitByPID derive the unit from that cgroup path: the first path
  component below the slices (`*.slice`) that is a unit name. The path is read from the
  kernel's /proc/<pid>/cgroup (the `0::` line under cgroup v2, `name=systemd` under v1); a
  process cannot move itself out of its unit's cgroup without write access to another
  cgroup, which unprivileged units do not have. A process of a user's own service manager
  is attested as the system unit that manager runs in (`user@<uid>.service`), as
  GetUnitByPID on the system bus answers.
- The fragment path: the unit file systemd loaded, found by walking systemd's unit search
  path (systemd.unit(5), in systemd's order, plus Debian's /lib/systemd/system) for the
  unit's name, then for its template (`name@.service`) for an instance. A unit with no file
  there (most transient scopes) gets no `fragment_path` selector. What this cannot see: a
  unit file added or removed since systemd last loaded the unit (before a daemon-reload);
  systemd reports the file it loaded, this attestor the file there now.
Selectors: `systemd:id:<unit>`, `systemd:fragment_path:<path>`. A process in no unit (no
systemd on this host, or PID 1's own cgroup) gets none.

Settings (`[workload_attestor.systemd]`): `proc_path` (default `/proc`), `root_path` (where
the host's file system is mounted, for the unit files; default `/`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from attestors.workload import cgroups
from attestors.workload.plugin import Settings, selectors
from hallmark.selectors import Selector

SELECTOR_TYPE = "systemd"
UNIT_SEARCH_PATH = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/run/systemd/generator.late",
)
_UNIT_SUFFIXES = (
    ".service",
    ".scope",
    ".socket",
    ".mount",
    ".swap",
    ".device",
    ".target",
    ".path",
    ".timer",
    ".automount",
)
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]{1,255}$")


def unit_of_path(path: str) -> str | None:
    """The unit a cgroup path belongs to (the first non-slice component), or None."""
    for component in path.split("/"):
        if not component or component.endswith(".slice"):
            continue
        if component.endswith(_UNIT_SUFFIXES) and _UNIT_NAME.match(component):
            return component
        return None  # below the slices, but not a unit: not systemd's cgroup layout
    return None


def _systemd_path(entries: list[cgroups.CgroupEntry]) -> str | None:
    for entry in entries:
        if entry.hierarchy == "0" and not entry.controllers:
            return entry.path  # cgroup v2 (unified): the one hierarchy
    for entry in entries:
        if "name=systemd" in entry.controllers:
            return entry.path  # cgroup v1: systemd's named hierarchy
    return None


class SystemdAttestor:
    """Attests processes by the systemd unit they run in."""

    name: ClassVar[str] = "systemd"

    def __init__(self, table: Mapping[str, Any]) -> None:
        settings = Settings(self.name, table)
        self.proc_path = settings.text("proc_path", "/proc") or "/proc"
        self.root_path = settings.text("root_path", "/") or "/"
        settings.finish()

    def attest(self, pid: int) -> frozenset[Selector]:
        path = _systemd_path(cgroups.read_cgroup(pid, proc_path=self.proc_path))
        unit = unit_of_path(path) if path is not None else None
        if unit is None:
            return frozenset()
        values = [f"id:{unit}"]
        if (fragment := self.fragment_path(unit)) is not None:
            values.append(f"fragment_path:{fragment}")
        return selectors(SELECTOR_TYPE, values)

    def fragment_path(self, unit: str) -> str | None:
        """The unit file systemd loads for `unit`, as a host path, or None."""
        names = [unit]
        prefix, at, rest = unit.partition("@")
        if at and rest.partition(".")[0]:
            names.append(f"{prefix}@.{rest.rpartition('.')[2]}")  # the template
        for name in names:
            for directory in UNIT_SEARCH_PATH:
                host_path = os.path.join(directory, name)
                if os.path.isfile(os.path.join(self.root_path, host_path.lstrip("/"))):
                    return host_path
        return None
