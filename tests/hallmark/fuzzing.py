"""Shared hypothesis settings and helpers of the parser fuzz tests (tests/hallmark/test_fuzz_*)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from hallmark.errors import HallmarkError

# Modest, reproducible runs: a few hundred inputs a parser, the same ones every run, no
# example database in the work tree, and no deadline (speed is for benchmarks/, not tests;
# pytest-timeout catches a hang).
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Any JSON value, nested a few levels.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def clear_error_or_result(parse: Callable[[], Any]) -> Any:
    """Run a parser: a result, or hallmark's root error with a code; anything else fails."""
    try:
        return parse()
    except HallmarkError as exc:
        assert exc.code and exc.code.replace("_", "").isalnum(), exc.code
        assert isinstance(exc.detail, str) and exc.detail
        return None
