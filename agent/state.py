"""The agent's in-memory state: bundles, authorised entries and their X.509-SVIDs.

State is an immutable `Snapshot`; `AgentState.publish` swaps in a new one, bumps the version
and wakes every Workload API stream waiting in `wait_for_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.bundle import Bundle, der_chain
from hallmark.selectors import Selector
from hallmark.spiffeid import SpiffeId
from hallmark.x509svid import BACKDATE

RENEWAL_JITTER = 0.1  # of the half-life, either way


def renewal_jitter(serial_number: int) -> float:
    """A fraction in [-RENEWAL_JITTER, +RENEWAL_JITTER], spread uniformly over serials."""
    unit = int.from_bytes(hashlib.sha256(str(serial_number).encode()).digest()[:8], "big")
    return RENEWAL_JITTER * (2 * unit / 2**64 - 1)


@dataclass(frozen=True)
class Entry:
    """A registration entry the agent is authorised for (as SyncAuthorizedEntries gave it)."""

    id: str
    spiffe_id: SpiffeId
    parent_id: str
    selectors: frozenset[Selector]
    x509_svid_ttl: int = 0
    hint: str = ""
    dns_names: tuple[str, ...] = ()
    revision: int = 0
    jwt_svid_ttl: int = 0
    # Trust domain names (no scheme) whose bundles this entry's workloads may trust.
    federates_with: tuple[str, ...] = ()


@dataclass(frozen=True)
class X509Svid:
    """An X.509-SVID with its private key: the chain is leaf first."""

    chain: tuple[x509.Certificate, ...]
    private_key: ec.EllipticCurvePrivateKey

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def not_before(self) -> dt.datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    @property
    def renew_at(self) -> dt.datetime:
        """Half-life with ±10% jitter, as SPIRE: renew when about half the lifetime has passed.

        The lifetime counts from issue, not from `not_before`, which the server backdates
        (BACKDATE) against clock skew: otherwise a 10 s SVID would be "half spent" at once.
        The jitter comes from the certificate's random serial, so one SVID always answers
        the same time while SVIDs issued together (after a restart, a taint, a CA rotation)
        spread their renewals instead of reaching the server at one instant.
        """
        issued = self.not_before + BACKDATE
        if issued >= self.not_after:
            issued = self.not_before
        half = (self.not_after - issued) / 2
        return issued + half * (1 + renewal_jitter(self.leaf.serial_number))

    def chain_der(self) -> bytes:
        return der_chain(self.chain)

    def key_der(self) -> bytes:
        """PKCS#8 DER, unencrypted: the Workload API's `x509_svid_key` encoding."""
        return self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class EntrySvid:
    """The X.509-SVID minted for one entry at one entry revision."""

    entry_id: str
    revision: int
    svid: X509Svid


@dataclass(frozen=True)
class Snapshot:
    """Everything the Workload API serves, at one version."""

    version: int = 0
    ready: bool = False
    bundle: Bundle | None = None
    entries: Mapping[str, Entry] = field(default_factory=dict)
    svids: Mapping[str, EntrySvid] = field(default_factory=dict)
    # Foreign trust domains' bundles, keyed by trust domain name; served only to workloads
    # whose entries federate with that trust domain.
    federated_bundles: Mapping[str, Bundle] = field(default_factory=dict)


class AgentState:
    """Holds the current snapshot and wakes waiters when it changes."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._condition = asyncio.Condition()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    async def publish(
        self,
        *,
        bundle: Bundle | None = None,
        entries: Mapping[str, Entry] | None = None,
        svids: Mapping[str, EntrySvid] | None = None,
        federated_bundles: Mapping[str, Bundle] | None = None,
        ready: bool | None = None,
    ) -> Snapshot:
        """Replace the given parts; `ready` means entries and SVIDs were synced once."""
        async with self._condition:
            current = self._snapshot
            new = replace(
                current,
                version=current.version + 1,
                bundle=bundle if bundle is not None else current.bundle,
                entries=dict(entries) if entries is not None else current.entries,
                svids=dict(svids) if svids is not None else current.svids,
                federated_bundles=(
                    dict(federated_bundles)
                    if federated_bundles is not None
                    else current.federated_bundles
                ),
            )
            synced = ready if ready is not None else current.ready
            self._snapshot = replace(
                new,
                ready=synced and new.bundle is not None,
            )
            self._condition.notify_all()
            return self._snapshot

    async def wait_for_change(self, version: int, timeout: float | None = None) -> Snapshot:
        """The first snapshot newer than `version` (the current one on timeout)."""
        async with self._condition:
            # asyncio.timeout: unlike 3.11's wait_for, it never swallows a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._condition.wait_for(lambda: self._snapshot.version != version)
            return self._snapshot
