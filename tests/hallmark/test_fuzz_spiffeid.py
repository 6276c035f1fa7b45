"""Fuzz: SPIFFE IDs and trust domain names give a valid result or `InvalidSpiffeId`, nothing else."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from hallmark.spiffeid import SpiffeId, TrustDomain
from tests.hallmark.fuzzing import FUZZ, clear_error_or_result

# Text near the grammar: SPIFFE's own characters plus the ones that break it.
_near = st.text(alphabet=string.ascii_letters + string.digits + ".-_/:@?#%[] \x00é", max_size=80)
spiffe_like = st.one_of(
    st.text(max_size=200),
    _near,
    st.builds(lambda rest: f"spiffe://{rest}", _near),
    st.builds(lambda rest: f"SPIFFE://{rest}", _near),
    st.builds(lambda n: "spiffe://" + "a" * n, st.integers(0, 3000)),
    st.builds(lambda n: "spiffe://td/" + "a/" * n, st.integers(0, 1500)),
)


@FUZZ
@given(spiffe_like)
def test_spiffe_id_parse_gives_a_valid_id_or_a_clear_error(text: str) -> None:
    parsed = clear_error_or_result(lambda: SpiffeId.parse(text))
    if parsed is not None:
        # a parsed ID prints back to the same text and parses again to itself
        assert str(parsed) == text
        assert SpiffeId.parse(str(parsed)) == parsed


@FUZZ
@given(spiffe_like)
def test_trust_domain_parse_gives_a_valid_name_or_a_clear_error(text: str) -> None:
    parsed = clear_error_or_result(lambda: TrustDomain.parse(text))
    if parsed is not None:
        assert TrustDomain(parsed.name) == parsed
        assert set(parsed.name) <= set(string.ascii_lowercase + string.digits + ".-_")


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.binary(max_size=10), st.lists(st.text(), max_size=2)))
def test_parsers_given_a_non_string_answer_a_clear_error(value: object) -> None:
    assert clear_error_or_result(lambda: SpiffeId.parse(value)) is None  # type: ignore[arg-type]
    assert clear_error_or_result(lambda: TrustDomain.parse(value)) is None  # type: ignore[arg-type]
