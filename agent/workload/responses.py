"""Workload API messages built from an agent snapshot for one caller's selectors.

Every message is complete (SPIFFE_Workload_API.md 4.3). Federated bundles go only to callers
whose entries federate with that trust domain (4.6: a bundle is what a workload trusts, so a
workload must not be handed a foreign trust domain its operator did not grant it).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.state import Entry, Snapshot
from hallmark.bundle import Bundle
from hallmark.protos import workloadapi_pb2
from hallmark.selectors import Selector, matches
from hallmark.spiffeid import TrustDomain


class Pending:
    """The caller is entitled to SVIDs the agent does not hold yet."""


class Denied:
    """The caller matches no entry."""


def matching_entries(snapshot: Snapshot, selectors: frozenset[Selector]) -> list[Entry]:
    """The caller's entries, in a stable order (SPIFFE ID, then entry id)."""
    return sorted(
        (e for e in snapshot.entries.values() if matches(e.selectors, selectors)),
        key=lambda e: (str(e.spiffe_id), e.id),
    )


def federated_for(snapshot: Snapshot, entries: Iterable[Entry]) -> dict[str, Bundle]:
    """The federated bundles these entries may use, keyed by trust domain name."""
    local = snapshot.bundle.trust_domain.name if snapshot.bundle is not None else ""
    names = {name for entry in entries for name in entry.federates_with if name != local}
    return {
        name: snapshot.federated_bundles[name]
        for name in sorted(names)
        if name in snapshot.federated_bundles
    }


def _x509_map(bundles: Mapping[str, Bundle]) -> dict[str, bytes]:
    # A bundle without X.509 authorities would be an empty (unparseable) DER set: leave it out.
    return {
        str(TrustDomain(name).id): bundle.x509_der()
        for name, bundle in bundles.items()
        if bundle.x509_authorities
    }


def x509_svid_response(
    snapshot: Snapshot, selectors: frozenset[Selector], now: dt.datetime
) -> workloadapi_pb2.X509SVIDResponse | Pending | Denied:
    """The complete FetchX509SVID message for a caller with `selectors`."""
    if not snapshot.ready or snapshot.bundle is None:
        return Pending()
    matching = matching_entries(snapshot, selectors)
    if not matching:
        return Denied()
    bundle_der = snapshot.bundle.x509_der()
    hints: set[str] = set()
    response = workloadapi_pb2.X509SVIDResponse(
        federated_bundles=_x509_map(federated_for(snapshot, matching))
    )
    for entry in matching:
        held = snapshot.svids.get(entry.id)
        if held is None or held.svid.not_after <= now:
            continue
        hint = unique_hint(entry.hint, hints)
        response.svids.append(
            workloadapi_pb2.X509SVID(
                spiffe_id=str(entry.spiffe_id),
                x509_svid=held.svid.chain_der(),
                x509_svid_key=held.svid.key_der(),
                bundle=bundle_der,
                hint=hint,
            )
        )
    return response if response.svids else Pending()


def unique_hint(hint: str, seen: set[str]) -> str:
    """The hint, or "" when an earlier SVID in the message has it (hints MUST be unique)."""
    if not hint or hint in seen:
        return ""
    seen.add(hint)
    return hint


def caller_bundles(snapshot: Snapshot, entries: Iterable[Entry]) -> dict[str, Bundle] | None:
    """The local bundle and the caller's federated ones by trust domain name (None: no bundle)."""
    if not snapshot.ready or snapshot.bundle is None:
        return None
    return {snapshot.bundle.trust_domain.name: snapshot.bundle, **federated_for(snapshot, entries)}


def x509_bundles_response(bundles: Mapping[str, Bundle]) -> workloadapi_pb2.X509BundlesResponse:
    return workloadapi_pb2.X509BundlesResponse(bundles=_x509_map(bundles))


def jwt_bundles_response(
    bundles: Mapping[str, Bundle], local: str
) -> workloadapi_pb2.JWTBundlesResponse:
    """JWKS of JWT authorities only (no other `use`); the local one always, others if any."""
    return workloadapi_pb2.JWTBundlesResponse(
        bundles={
            str(TrustDomain(name).id): bundle.jwt_jwks_json()
            for name, bundle in bundles.items()
            if name == local or bundle.jwt_authorities
        }
    )


def claims_struct(response: Any, claims: Mapping[str, Any]) -> None:
    """Fill a ValidateJWTSVIDResponse's `claims` (google.protobuf.Struct) from JSON claims."""
    response.claims.update(dict(claims))


class CallerViews:
    """What one caller is served from one snapshot, computed once per (snapshot, selectors).

    A snapshot never changes once published (a change is a new version), so a caller's
    entries, bundles and messages at a version are facts that can be kept and reused by every
    call with the same selectors; only an X.509 message also depends on the clock (an SVID
    past its not_after is left out), so it is kept until its first SVID expires. Bounded:
    the least recently used (version, selectors) goes first.
    """

    def __init__(self, max_views: int = 4096) -> None:
        self._max_views = max_views
        self._views: OrderedDict[tuple[int, frozenset[Selector]], dict[str, Any]] = OrderedDict()
        self.built = 0

    def __len__(self) -> int:
        return len(self._views)

    def _view(self, snapshot: Snapshot, selectors: frozenset[Selector]) -> dict[str, Any]:
        key = (snapshot.version, selectors)
        view = self._views.get(key)
        if view is None:
            view = {}
            self._views[key] = view
            while len(self._views) > self._max_views:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(key)
        return view

    def entries(self, snapshot: Snapshot, selectors: frozenset[Selector]) -> list[Entry]:
        view = self._view(snapshot, selectors)
        if "entries" not in view:
            self.built += 1
            view["entries"] = matching_entries(snapshot, selectors)
        return list(view["entries"])

    def bundles(
        self, snapshot: Snapshot, selectors: frozenset[Selector]
    ) -> dict[str, Bundle] | None:
        view = self._view(snapshot, selectors)
        if "bundles" not in view:
            view["bundles"] = caller_bundles(snapshot, self.entries(snapshot, selectors))
        bundles = view["bundles"]
        return None if bundles is None else dict(bundles)

    def message(
        self,
        name: str,
        snapshot: Snapshot,
        selectors: frozenset[Selector],
        build: Callable[[], Any],
    ) -> tuple[Any, bytes | None]:
        """A bundle message (None: not ready) and its deterministic encoding, built once."""
        view = self._view(snapshot, selectors)
        if name not in view:
            message = build()
            encoded = None if message is None else message.SerializeToString(deterministic=True)
            view[name] = (message, encoded)
        return view[name]  # type: ignore[no-any-return]

    def x509(
        self, snapshot: Snapshot, selectors: frozenset[Selector], now: dt.datetime
    ) -> tuple[workloadapi_pb2.X509SVIDResponse | Pending | Denied, bytes | None]:
        """The FetchX509SVID message (and its encoding) for this caller at `now`."""
        view = self._view(snapshot, selectors)
        held = view.get("x509")
        if held is not None and (held[2] is None or now < held[2]):
            return held[0], held[1]
        result = x509_svid_response(snapshot, selectors, now)
        encoded = valid_until = None
        if isinstance(result, workloadapi_pb2.X509SVIDResponse):
            encoded = result.SerializeToString(deterministic=True)
            valid_until = min(
                snapshot.svids[e.id].svid.not_after
                for e in self.entries(snapshot, selectors)
                if e.id in snapshot.svids and snapshot.svids[e.id].svid.not_after > now
            )
        # Pending and Denied hold for the rest of this snapshot: SVIDs only ever expire.
        view["x509"] = (result, encoded, valid_until)
        return result, encoded
