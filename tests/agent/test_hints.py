"""Hints are unique within one Workload API response (SPIFFE_Workload_API.md 5.1.1, 6.1.1)."""

from agent.workload.responses import unique_hint


def test_a_repeated_hint_is_blanked_so_hints_in_a_response_stay_unique() -> None:
    seen: set[str] = set()
    hints = [unique_hint(h, seen) for h in ["internal", "external", "internal", "", "external"]]
    assert hints == ["internal", "external", "", "", ""]
    non_empty = [h for h in hints if h]
    assert len(non_empty) == len(set(non_empty))
