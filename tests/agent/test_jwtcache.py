"""The agent's JWT-SVID cache: bounded, least recently used out first."""

from __future__ import annotations

import asyncio

from agent.jwtcache import JwtSvidCache, MintedJwt
from agent.state import Entry
from hallmark.spiffeid import SpiffeId


def _entry(entry_id: str, revision: int = 1) -> Entry:
    return Entry(
        entry_id,
        SpiffeId.parse(f"spiffe://example.org/{entry_id}"),
        "",
        frozenset(),
        revision=revision,
    )


def test_cache_is_bounded_and_evicts_the_least_recently_used_token() -> None:
    async def scenario() -> None:
        minted: list[tuple[str, tuple[str, ...]]] = []

        async def minter(entry_id: str, audience: tuple[str, ...]) -> MintedJwt:
            minted.append((entry_id, audience))
            return MintedJwt(f"token-{len(minted)}", 1000.0, 1300.0)

        # given a cache of two tokens (clock fixed before half-life)
        cache = JwtSvidCache(minter, max_size=2, clock=lambda: 1100.0)
        a, b, c = _entry("a"), _entry("b"), _entry("c")
        await cache.fetch(a, ["x"])
        await cache.fetch(b, ["x"])
        await cache.fetch(a, ["x"])  # a is now the most recently used

        # when a third token is minted
        await cache.fetch(c, ["x"])

        # then b (least recently used) was evicted, a was kept
        assert len(cache) == 2
        await cache.fetch(a, ["x"])
        assert len(minted) == 3
        await cache.fetch(b, ["x"])
        assert len(minted) == 4
        # and a new entry revision never reuses the old revision's token
        await cache.fetch(_entry("b", revision=2), ["x"])
        assert len(minted) == 5

    asyncio.run(scenario())
