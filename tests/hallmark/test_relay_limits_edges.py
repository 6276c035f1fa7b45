"""The relay's limits refuse nonsense at their edges, and sources are counted as documented."""

from __future__ import annotations

import pytest

from hallmark.relaylimits import RelayLimits, RelayLimitsError, source_of


@pytest.mark.parametrize(
    "settings",
    [
        {"max_connections_per_source": 0},
        {"idle_timeout": 0},
        {"idle_timeout": -1},
        {"handshake_timeout": 0},
        {"handshake_timeout": -0.5},
        {"refused_name_delay": -1},
    ],
)
def test_limits_that_cannot_work_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(RelayLimitsError):
        RelayLimits(**settings)  # type: ignore[arg-type]


def test_the_smallest_limits_that_work_are_accepted() -> None:
    limits = RelayLimits(max_connections_per_source=1, idle_timeout=0.01, handshake_timeout=0.01)
    assert limits.max_connections_per_source == 1


def test_a_link_local_address_counts_without_its_zone_and_a_name_as_itself() -> None:
    # a zone index names the interface, not the host: fe80::1%eth0 is in fe80::/64
    assert source_of("fe80::1%eth0") == source_of("fe80::2") == "fe80::/64"
    # something that is no address (a Unix peer, say) is its own source
    assert source_of("unix:/run/x.sock") == "unix:/run/x.sock"
