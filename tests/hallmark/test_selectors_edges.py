"""Selector edges that matching relies on: exact limits, exact matches, clear refusals.

Written to kill the mutants `make mutation` found surviving in hallmark/selectors.py.
"""

import pytest

from hallmark.errors import InvalidSelector
from hallmark.selectors import MAX_VALUE_LENGTH, Selector, matches, parse_selectors


def test_an_entry_matches_a_workload_whose_selectors_are_exactly_its_own() -> None:
    # the subset is not strict: a workload found with exactly the entry's selectors matches
    selectors = parse_selectors(["unix:uid:1000", "unix:gid:1000"])
    assert matches(selectors, selectors)
    assert matches(parse_selectors(["unix:uid:1000"]), parse_selectors(["unix:uid:1000"]))


def test_a_value_of_the_maximum_length_is_accepted_and_one_more_is_refused() -> None:
    assert Selector("docker", "x" * MAX_VALUE_LENGTH).value == "x" * MAX_VALUE_LENGTH
    with pytest.raises(InvalidSelector, match="longer than"):
        Selector("docker", "x" * (MAX_VALUE_LENGTH + 1))


@pytest.mark.parametrize("char", ["\x00", "\t", "\x1f"])
def test_control_characters_are_refused(char: str) -> None:
    with pytest.raises(InvalidSelector, match="control characters"):
        Selector("unix", f"user:a{char}b")


@pytest.mark.parametrize("char", [" ", "!"])
def test_printable_characters_next_to_the_control_range_are_accepted(char: str) -> None:
    assert Selector("docker", f"label:a{char}b").value == f"label:a{char}b"


@pytest.mark.parametrize("value", [1000, None, b"unix:uid:0"])
def test_a_selector_that_is_not_a_string_is_refused_as_invalid(value: object) -> None:
    with pytest.raises(InvalidSelector, match="must be a string"):
        Selector.parse(value)  # type: ignore[arg-type]


def test_a_selector_without_a_colon_is_refused_with_the_expected_form() -> None:
    with pytest.raises(InvalidSelector, match="is not 'type:value'"):
        Selector.parse("unix")
