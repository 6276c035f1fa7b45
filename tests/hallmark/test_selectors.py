"""Selectors are `type:value` and match by subset."""

import pytest

from hallmark.errors import InvalidSelector
from hallmark.selectors import Selector, matches, parse_selectors


def test_selector_splits_at_the_first_colon() -> None:
    assert Selector.parse("unix:uid:1000") == Selector("unix", "uid:1000")
    assert str(Selector.parse("k8s:ns:default")) == "k8s:ns:default"


@pytest.mark.parametrize(
    "text", ["unix", "unix:", ":uid:1", "UNIX:uid:1", "un ix:uid:1", "unix:uid\n:1"]
)
def test_malformed_selectors_are_refused(text: str) -> None:
    with pytest.raises(InvalidSelector):
        Selector.parse(text)


def test_entry_matches_when_its_selectors_are_a_subset_of_the_found_ones() -> None:
    found = parse_selectors(["unix:uid:1000", "unix:gid:1000", "unix:user:app"])
    assert matches(parse_selectors(["unix:uid:1000"]), found)
    assert matches(parse_selectors(["unix:uid:1000", "unix:user:app"]), found)
    assert not matches(parse_selectors(["unix:uid:1000", "unix:user:root"]), found)
    assert not matches(frozenset(), found)  # an entry without selectors matches nothing
