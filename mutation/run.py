"""Mutation testing of Hallmark's security-critical modules (`make mutation`).

For each target of `mutation/targets.py`: run its guarding tests once on the real source
(they must pass), then for each mutant write it over the module in place, run the tests with
`-x` in a fresh interpreter (so embedded servers, subprocess agents and workload servers all
see the mutant), and restore the file. A mutant whose tests fail or time out is killed; one
whose tests pass survived. Results accumulate in `mutation/results.json`: a rerun skips
mutants already killed or explained against the same source and tries the others again.
`mutation/report.md` is rewritten from them, with each survivor's diff and, when one is
recorded in `mutation/justifications.yaml`, why it is equivalent.

    .venv/bin/python -m mutation.run [--only NAME,...] [--max N] [--fresh] [--report-only]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mutation.mutate import Mutant, mutants
from mutation.targets import TARGETS, Target

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "mutation"
RESULTS = HERE / "results.json"
REPORT = HERE / "report.md"
JUSTIFICATIONS = HERE / "justifications.yaml"
BACKUP = HERE / ".backup"
# Its own embedded servers, started once for the whole run: the children use them as external
# servers (as `hallmark up` tells the processes it starts), so no test run starts or stops
# one, and a developer's own test runs under .hallmark-test are left alone.
DATA_DIR = ROOT / ".hallmark-mutation"
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--timeout=120"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_results() -> dict[str, Any]:
    if RESULTS.exists():
        return dict(json.loads(RESULTS.read_text()))
    return {}


def _save_results(results: dict[str, Any]) -> None:
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def _only_run() -> Iterator[None]:
    """One mutating run at a time: a second would restore the first's module under it."""
    BACKUP.mkdir(parents=True, exist_ok=True)
    with (BACKUP / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit("another mutation run is in progress in this checkout")
        yield


def _restore_leftovers() -> None:
    """A run killed mid-mutant left its backup: put the real source back first."""
    if not BACKUP.is_dir():
        return
    for saved in BACKUP.rglob("*.py"):
        original = ROOT / saved.relative_to(BACKUP)
        shutil.copyfile(saved, original)
        print(f"restored {original.relative_to(ROOT)} from an interrupted run")
        saved.unlink()


def _drop_bytecode(path: Path) -> None:
    # A mutant of the same size written within the same second would reuse a stale .pyc.
    for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        cached.unlink(missing_ok=True)


@contextlib.contextmanager
def _mutated(path: Path, source: str) -> Iterator[None]:
    original = path.read_text()
    backup = BACKUP / path.relative_to(ROOT)
    backup.parent.mkdir(parents=True, exist_ok=True)
    backup.write_text(original)
    try:
        path.write_text(source)
        _drop_bytecode(path)
        yield
    finally:
        path.write_text(original)
        _drop_bytecode(path)
        backup.unlink(missing_ok=True)


@contextlib.contextmanager
def _embedded_servers() -> Iterator[dict[str, str]]:
    """PostgreSQL, Redis and OpenBao under DATA_DIR for the run; the variables to export."""
    from config.embedded import EmbeddedServers

    servers = EmbeddedServers(DATA_DIR, progress=lambda m: print(f"   {m}", flush=True))
    exported = servers.start()
    try:
        yield {
            **exported,
            "HALLMARK_DATA_DIR": str(DATA_DIR),
            "HALLMARK_EMBEDDED": "true",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    finally:
        servers.stop()


_CHILD_ENV: dict[str, str] = {}


def _run_tests(target: Target) -> tuple[str, str, float]:
    """(status, detail, seconds): status is "passed", "failed" or "timeout"."""
    env = dict(os.environ, **_CHILD_ENV)
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and test files
        [*PYTEST, *target.tests],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=target.timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return "timeout", f"no answer in {target.timeout:.0f} s", time.monotonic() - started
    seconds = time.monotonic() - started
    if process.returncode == 0:
        return "passed", "", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    detail = failed[0] if failed else output.strip().splitlines()[-1:][0] if output else ""
    return "failed", detail, seconds


def _run_target(target: Target, results: dict[str, Any], *, limit: int | None) -> None:
    path = ROOT / target.path
    source = path.read_text()
    record = results.get(target.name)
    if record is None or record.get("source_sha") != _sha(source):
        record = {"path": target.path, "source_sha": _sha(source), "mutants": {}}
    record["tests"] = list(target.tests)
    results[target.name] = record
    found = mutants(source, functions=target.functions, strings=target.strings)
    record["total"] = len(found)
    current = {m.key for m in found}  # forget mutants the mutation rules no longer make
    record["mutants"] = {k: v for k, v in record["mutants"].items() if k in current}
    # unexplained survivors are tried again every run: a test written since may kill them
    judged = record["mutants"]
    explained = _justifications()
    todo = [
        m
        for m in found
        if m.key not in judged
        or (judged[m.key]["outcome"] == "survived" and m.key not in explained)
    ]
    if limit is not None:
        todo = todo[:limit]
    print(f"== {target.name}: {len(found)} mutants, {len(todo)} to run", flush=True)
    if not todo:
        return
    status, detail, seconds = _run_tests(target)
    if status != "passed":
        print(f"   baseline {status} ({detail}); skipping {target.name}", flush=True)
        record["baseline"] = f"{status}: {detail}"
        return
    record["baseline"] = f"passed in {seconds:.1f} s"
    for n, mutant in enumerate(todo, 1):
        with _mutated(path, mutant.source):
            status, detail, seconds = _run_tests(target)
        outcome = "survived" if status == "passed" else "killed"
        record["mutants"][mutant.key] = _describe(
            mutant, source, outcome=outcome, status=status, detail=detail, seconds=seconds
        )
        print(
            f"   [{n}/{len(todo)}] {outcome:8} {mutant.function}:{mutant.line} "
            f"{mutant.operator} ({seconds:.0f} s){' ' + detail if detail else ''}",
            flush=True,
        )
        _save_results(results)


def _describe(  # noqa: PLR0913 - one record's fields
    mutant: Mutant, source: str, *, outcome: str, status: str, detail: str, seconds: float
) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "how": status if outcome == "killed" else "",
        "killed_by": detail,
        "function": mutant.function,
        "line": mutant.line,
        "operator": mutant.operator,
        "diff": mutant.diff(source, "x").split("\n", 2)[2] if outcome == "survived" else "",
        "seconds": round(seconds, 1),
    }


def _justifications() -> dict[str, str]:
    if not JUSTIFICATIONS.exists():
        return {}
    return dict(yaml.safe_load(JUSTIFICATIONS.read_text()) or {})


def write_report(results: dict[str, Any]) -> None:
    justified = _justifications()
    lines = [
        "# Mutation testing report",
        "",
        "Written by `make mutation` (`mutation/run.py`); one mutant at a time, applied in place,",
        "guarding tests run with `-x` against the real embedded servers. A survivor is either",
        "killed by a new test on the next run or explained in `mutation/justifications.yaml`.",
        "",
        "| module | path | killed | survived | run / total | explained survivors |",
        "|---|---|---|---|---|---|",
    ]
    details: list[str] = []
    for target in TARGETS:
        record = results.get(target.name)
        if record is None:
            lines.append(f"| {target.name} | `{target.path}` | – | – | not run | – |")
            continue
        judged = record["mutants"]
        killed = sum(1 for m in judged.values() if m["outcome"] == "killed")
        survivors = {k: m for k, m in judged.items() if m["outcome"] == "survived"}
        explained = sum(1 for k in survivors if k in justified)
        lines.append(
            f"| {target.name} | `{record['path']}` | {killed} | {len(survivors)} | "
            f"{len(judged)} / {record.get('total', '?')} | {explained} / {len(survivors)} |"
        )
        details.append(f"## {target.name} (`{record['path']}`)")
        details.append("")
        details.append("Guarding tests: " + ", ".join(f"`{t}`" for t in record["tests"]) + ".")
        details.append(f"Baseline: {record.get('baseline', 'not run')}.")
        details.append("")
        if not survivors:
            details.append("No survivors.")
            details.append("")
        for key, mutant in sorted(survivors.items(), key=lambda kv: kv[1]["line"]):
            why = justified.get(key, "**not yet explained**")
            details.append(
                f"- `{key}` {mutant['function']} line {mutant['line']}, {mutant['operator']}: {why}"
            )
            details.append("")
            details.append("  ```diff")
            details.extend("  " + line for line in mutant["diff"].rstrip("\n").splitlines())
            details.append("  ```")
            details.append("")
    REPORT.write_text("\n".join([*lines, "", *details]).rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated target names")
    parser.add_argument("--max", type=int, help="run at most N new mutants per target")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    chosen = [t for t in TARGETS if not args.only or t.name in args.only.split(",")]
    if args.only and len(chosen) != len(args.only.split(",")):
        parser.error(f"unknown target in {args.only!r}; known: {[t.name for t in TARGETS]}")
    if args.list:
        for target in chosen:
            source = (ROOT / target.path).read_text()
            for m in mutants(source, functions=target.functions, strings=target.strings):
                print(f"{target.name} {m.key} {m.function}:{m.line} {m.operator}")
        return 0
    if args.report_only:
        write_report(_load_results())
        print(f"report: {REPORT.relative_to(ROOT)}")
        return 0
    # `kill` (SIGTERM) unwinds like Ctrl-C, so the mutated module is always restored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with _only_run():
        _restore_leftovers()
        results = {} if args.fresh else _load_results()
        try:
            with _embedded_servers() as exported:
                _CHILD_ENV.update(exported)
                for target in chosen:
                    _run_target(target, results, limit=args.max)
        finally:
            _save_results(results)
    write_report(results)
    print(f"report: {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
