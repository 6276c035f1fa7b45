"""Fuzz: selectors give a `Selector` or `InvalidSelector`, never another exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hallmark.selectors import Selector, matches, parse_selectors
from tests.hallmark.fuzzing import FUZZ, clear_error_or_result

selector_like = st.one_of(
    st.text(max_size=100),
    st.builds(lambda t, v: f"{t}:{v}", st.text(max_size=70), st.text(max_size=1100)),
    st.builds(lambda v: f"unix:{v}", st.text(max_size=40)),
)


@FUZZ
@given(selector_like)
def test_selector_parse_gives_a_selector_or_a_clear_error(text: str) -> None:
    parsed = clear_error_or_result(lambda: Selector.parse(text))
    if parsed is not None:
        assert str(parsed) == text
        assert Selector.parse(str(parsed)) == parsed
        assert matches([parsed], [parsed])


@FUZZ
@given(st.lists(selector_like, max_size=5))
def test_a_list_of_selectors_is_all_parsed_or_refused_as_a_whole(texts: list[str]) -> None:
    clear_error_or_result(lambda: parse_selectors(texts))


@FUZZ
@given(
    st.one_of(
        st.none(), st.integers(), st.binary(max_size=10), st.dictionaries(st.text(), st.text())
    )
)
def test_a_non_string_selector_is_a_clear_error(value: object) -> None:
    assert clear_error_or_result(lambda: Selector.parse(value)) is None  # type: ignore[arg-type]
