"""The conformance matrix is complete and honest.

`matrix.yaml` lists every line of the covered SPIFFE standards that says MUST or MUST NOT, each
mapped to the tests that prove it or marked not applicable with a reason. These tests check
that every MUST line has a row, that each row quotes its standard verbatim, and that each
test it names exists (so a renamed or deleted test breaks the matrix, not silently passes).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import yaml

from tests.conformance.standards import ROOT, SHARED, STANDARDS, VENDORED

MATRIX = yaml.safe_load((Path(__file__).parent / "matrix.yaml").read_text())
ROWS = MATRIX["rows"]


def _must_lines(spec: str) -> list[tuple[int, str]]:
    lines = (STANDARDS / spec).read_text().splitlines()
    return [(n, line) for n, line in enumerate(lines, 1) if "MUST" in line]


@functools.cache
def _tests_in(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


@pytest.mark.parametrize("spec", MATRIX["standards"])
def test_every_must_line_of_the_standard_has_a_row(spec: str) -> None:
    quotes = [row["quote"] for row in ROWS if row["spec"] == spec]
    missing = [
        f"{spec}:{n}: {line.strip()[:120]}"
        for n, line in _must_lines(spec)
        if not any(quote in line for quote in quotes)
    ]
    assert not missing, "MUST lines without a matrix row:\n" + "\n".join(missing)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row['spec']}:{row['quote'][:40]}")
def test_row_quotes_its_standard_and_names_tests_that_exist(row: dict) -> None:
    text = (STANDARDS / row["spec"]).read_text()
    assert row["quote"] in text, f"quote not found in {row['spec']}: {row['quote']!r}"
    assert row["status"] in {"covered", "not_applicable"}, row
    if row["status"] == "not_applicable":
        assert row.get("reason"), f"a not-applicable row needs a reason: {row['quote']!r}"
        return
    assert row.get("tests"), f"a covered row needs tests: {row['quote']!r}"
    for ref in row["tests"]:
        path, _, name = ref.partition("::")
        assert (ROOT / path).is_file(), f"{ref}: no such file"
        assert name in _tests_in(path), f"{ref}: no such test"


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared/ beside this checkout to compare with")
def test_vendored_standards_match_the_shared_copy() -> None:
    for vendored in sorted(VENDORED.iterdir()):
        assert vendored.read_bytes() == (SHARED / vendored.name).read_bytes(), vendored.name
