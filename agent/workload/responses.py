"""Workload API messages built from an agent snapshot for one caller's selectors.

Every message is complete (SPIFFE_Workload_API.md 4.3). Federated bundles go only to callers
whose entries federate with that trust domain (4.6: a bundle is what a workload trusts, so a
workload must not be handed a foreign trust domain its operator did not grant it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
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
