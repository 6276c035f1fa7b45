"""Mutants of one Python module: small AST changes, each applied to the source text in place.

A mutant replaces exactly one node's source segment (an operator flipped, a check negated, a
statement dropped, a keyword argument dropped), so the rest of the file keeps its text and the
diff of a survivor is the one line that changed. Lines marked `# pragma: no mutate` and the
bodies of logging calls, docstrings and annotations are never mutated.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

_COMPARE_SWAPS: dict[type[ast.cmpop], list[type[ast.cmpop]]] = {
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.Lt: [ast.GtE, ast.LtE],
    ast.LtE: [ast.Gt, ast.Lt],
    ast.Gt: [ast.LtE, ast.GtE],
    ast.GtE: [ast.Lt, ast.Gt],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
}
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
}
_LOGGING_NAMES = {"_log", "log", "logger", "logging", "warnings"}
NO_MUTATE = "pragma: no mutate"


@dataclass(frozen=True)
class Mutant:
    """One changed copy of a module's source."""

    key: str  # stable across unrelated edits: function, operator, segment, occurrence
    function: str
    line: int
    operator: str
    source: str

    def diff(self, original: str, path: str) -> str:
        return "".join(
            difflib.unified_diff(
                original.splitlines(keepends=True),
                self.source.splitlines(keepends=True),
                fromfile=f"a/{path}",
                tofile=f"b/{path}",
                n=1,
            )
        )


class _Offsets:
    """(line, column) → index into the source text (columns are UTF-8 byte offsets)."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def index(self, line: int, col_bytes: int) -> int:
        text = self.lines[line - 1]
        col = len(text.encode()[:col_bytes].decode(errors="ignore"))
        return self.starts[line - 1] + col


def _is_logging_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    while isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name) and func.value.id in _LOGGING_NAMES:
            return True
        func = func.value
    return False


def _is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and isinstance(parent, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    )


def _is_class(node: ast.AST) -> bool:
    return isinstance(node, ast.ClassDef)


def _is_unreachable_guard(node: ast.AST) -> bool:
    """`raise AssertionError("unreachable ...")` after an abort: dropping it changes nothing."""
    return (
        isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and isinstance(node.exc.func, ast.Name)
        and node.exc.func.id == "AssertionError"
    )


class _Walker:
    def __init__(self, source: str, functions: tuple[str, ...] | None, strings: bool) -> None:
        self.source = source
        self.tree = ast.parse(source)
        self.offsets = _Offsets(source)
        self.functions = functions
        self.strings = strings
        self.skip_lines = {n for n, line in enumerate(source.splitlines(), 1) if NO_MUTATE in line}

    def wanted(self, qualname: str) -> bool:
        if self.functions is None:
            return True
        return any(qualname == f or qualname.startswith(f + ".") for f in self.functions)

    def points(self) -> Iterator[tuple[str, ast.AST, str, ast.AST | str]]:
        """(function qualname, original node, operator name, replacement node or text)."""
        yield from self._visit(self.tree, None, "")

    def _visit(
        self, node: ast.AST, parent: ast.AST | None, qualname: str, function: bool = False
    ) -> Iterator[tuple[str, ast.AST, str, ast.AST | str]]:
        """Mutations inside functions only: class bodies declare, they do not check."""
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            qualname = f"{qualname}.{node.name}" if qualname else node.name
            # decorators, annotations and defaults stay as they are; walk the body only
            for child in node.body:
                yield from self._visit(child, node, qualname, function or not _is_class(node))
            return
        if _is_docstring(node, parent) or _is_logging_call(node):
            return
        if isinstance(node, ast.Expr) and _is_logging_call(node.value):
            return
        if isinstance(node, ast.AnnAssign):
            if node.value is not None:
                yield from self._visit(node.value, node, qualname, function)
            return
        line = getattr(node, "lineno", None)
        if line is not None and line in self.skip_lines:
            return
        if function and self.wanted(qualname):
            yield from self._mutations(node, parent, qualname)
        for child in ast.iter_child_nodes(node):
            yield from self._visit(child, node, qualname, function)

    def _mutations(  # noqa: PLR0912 - one branch per kind of node
        self, node: ast.AST, parent: ast.AST | None, qualname: str
    ) -> Iterator[tuple[str, ast.AST, str, ast.AST | str]]:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for swap in _COMPARE_SWAPS.get(type(op), []):
                    new = copy.deepcopy(node)
                    new.ops[i] = swap()
                    yield qualname, node, f"compare {type(op).__name__}->{swap.__name__}", new
        elif isinstance(node, ast.BoolOp):
            new = copy.deepcopy(node)
            new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            yield qualname, node, f"boolop {type(node.op).__name__}->{type(new.op).__name__}", new
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield qualname, node, "drop not", node.operand
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
            new = copy.deepcopy(node)
            new.op = _BINOP_SWAPS[type(node.op)]()
            yield qualname, node, f"binop {type(node.op).__name__}->{type(new.op).__name__}", new
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield (
                qualname,
                node,
                f"constant {node.value}->{not node.value}",
                ast.Constant(not node.value),
            )
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int)
            and not isinstance(node.value, bool)
        ):
            yield (
                qualname,
                node,
                f"number {node.value}->{node.value + 1}",
                ast.Constant(node.value + 1),
            )
        elif isinstance(node, ast.JoinedStr) and self.strings:
            for i, value in enumerate(node.values):
                if isinstance(value, ast.FormattedValue):
                    new = copy.deepcopy(node)
                    del new.values[i]
                    yield qualname, node, f"f-string drop {{{ast.unparse(value.value)}}}", new
        elif isinstance(node, ast.Call) and not _is_logging_call(node):
            for i, keyword in enumerate(node.keywords):
                if keyword.arg is None:
                    continue
                new = copy.deepcopy(node)
                del new.keywords[i]
                yield qualname, node, f"drop keyword {keyword.arg}=", new
        if isinstance(node, ast.If | ast.While) and not isinstance(
            node.test, ast.Compare | ast.UnaryOp | ast.BoolOp | ast.Constant
        ):
            new_test = ast.UnaryOp(ast.Not(), copy.deepcopy(node.test))
            yield qualname, node.test, "negate condition", new_test
        if isinstance(node, ast.Raise) and not _is_unreachable_guard(node):
            yield qualname, node, "drop raise", "pass"
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call | ast.Await):
            yield qualname, node, "drop call", "pass"
        if (
            isinstance(node, ast.Return)
            and node.value is not None
            and not (isinstance(node.value, ast.Constant) and node.value.value is None)
        ):
            yield qualname, node, "return None", "return None"
        if isinstance(node, ast.Continue):
            yield qualname, node, "continue->break", "break"
        if isinstance(node, ast.Break):
            yield qualname, node, "break->continue", "continue"

    def apply(self, node: ast.AST, replacement: ast.AST | str) -> str:
        start = self.offsets.index(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offsets.index(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        if isinstance(replacement, str):
            text = replacement
        else:
            text = ast.unparse(replacement)
            if isinstance(node, ast.expr):
                text = f"({text})"
        return self.source[:start] + text + self.source[end:]


def mutants(
    source: str, *, functions: tuple[str, ...] | None = None, strings: bool = False
) -> list[Mutant]:
    """Every mutant of `source` (only inside `functions`, qualified names, when given)."""
    walker = _Walker(source, functions, strings)
    found: list[Mutant] = []
    seen: dict[str, int] = {}
    for qualname, node, operator, replacement in walker.points():
        mutated = walker.apply(node, replacement)
        if mutated == source:
            continue
        try:
            ast.parse(mutated)
        except SyntaxError:
            continue
        segment = ast.get_source_segment(source, node) or ""
        base = f"{qualname}|{operator}|{' '.join(segment.split())}"
        seen[base] = seen.get(base, 0) + 1
        digest = hashlib.sha256(f"{base}|{seen[base]}".encode()).hexdigest()[:12]
        found.append(
            Mutant(
                key=digest,
                function=qualname,
                line=node.lineno,  # type: ignore[attr-defined]
                operator=operator,
                source=mutated,
            )
        )
    return found
