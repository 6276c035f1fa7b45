"""The agent's JWT-SVID cache: one token per (entry, audience set), renewed at half-life.

Tokens are minted by the control plane (NewJWTSVID, signed in the trust domain's key manager)
and reused until half their lifetime has passed, as SPIRE does, so a busy workload asking for
the same audience again costs no round trip. Tokens of removed or changed entries are evicted
when the agent syncs, tokens signed with a tainted JWT key as soon as the taint is known;
the cache is bounded (least recently used first out).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from agent.state import Entry
from agent.taint import jwt_key_id

DEFAULT_MAX_SIZE = 10_000
CacheKey = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class MintedJwt:
    """A JWT-SVID as NewJWTSVID answered it (times in Unix seconds)."""

    token: str
    issued_at: float
    expires_at: float

    @property
    def renew_at(self) -> float:
        """Half-life: past it, the token is renewed instead of served again."""
        return self.issued_at + (self.expires_at - self.issued_at) / 2


JwtMinter = Callable[[str, tuple[str, ...]], Awaitable[MintedJwt]]


@dataclass(frozen=True)
class _Held:
    revision: int
    jwt: MintedJwt


def audience_key(audience: Iterable[str]) -> tuple[str, ...]:
    """The audience as a set, sorted: ["b", "a", "a"] and ["a", "b"] share a token."""
    return tuple(sorted(set(audience)))


class JwtSvidCache:
    """JWT-SVIDs by (entry id, sorted audience); mints through `minter` when none is fresh."""

    def __init__(
        self,
        minter: JwtMinter,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._minter = minter
        self._max_size = max_size
        self._clock = clock
        self._held: OrderedDict[CacheKey, _Held] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Future[MintedJwt]] = {}
        self._tainted: frozenset[str] = frozenset()
        self.mints = 0

    def __len__(self) -> int:
        return len(self._held)

    async def fetch(self, entry: Entry, audience: Collection[str]) -> MintedJwt:
        """A token for `entry` and `audience`: the cached one before half-life, else a new one."""
        key: CacheKey = (entry.id, audience_key(audience))
        held = self._held.get(key)
        if held is not None and held.revision == entry.revision:
            if self._clock() < held.jwt.renew_at:
                self._held.move_to_end(key)
                return held.jwt
        pending = self._inflight.get(key)
        if pending is not None:  # another caller is minting this very token: share it
            return await asyncio.shield(pending)
        future: asyncio.Future[MintedJwt] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            jwt = await self._minter(entry.id, key[1])
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody shares it
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(jwt)
        self.mints += 1
        if self._tainted and jwt_key_id(jwt.token) in self._tainted:
            return jwt  # minted just before the taint was known: serve it, never again
        self._held[key] = _Held(entry.revision, jwt)
        self._held.move_to_end(key)
        while len(self._held) > self._max_size:
            self._held.popitem(last=False)
        return jwt

    def retain(self, entries: Mapping[str, Entry]) -> None:
        """Evict tokens of entries that are gone or whose revision changed."""
        for key in [k for k, v in self._held.items() if _stale(k, v, entries)]:
            del self._held[key]

    def taint(self, key_ids: frozenset[str]) -> int:
        """Evict (and never cache again) tokens signed with these JWT keys; how many went."""
        self._tainted = frozenset(key_ids)
        if not self._tainted:
            return 0
        gone = [k for k, v in self._held.items() if jwt_key_id(v.jwt.token) in self._tainted]
        for key in gone:
            del self._held[key]
        return len(gone)


def _stale(key: CacheKey, held: _Held, entries: Mapping[str, Entry]) -> bool:
    entry = entries.get(key[0])
    return entry is None or entry.revision != held.revision
