"""Refresh a relationship's bundle from its endpoint: fetch, check, keep the last good one.

`refresh_relationship` is the one write path (the API's "refresh now" and the Celery sweep
both call it). The fetch runs outside any transaction; the result is stored under a row lock
and re-checked against the sequence held then. On any error the bundle held stays, and
`last_error`, `refresh_failures` and `next_refresh_at` (exponential back-off from the next
polling interval, SPIFFE_Federation.md 5.3.2) say what happened.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from typing import Any

from cryptography import x509
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config import metrics
from federation import fetcher
from federation.models import FETCHED_PROFILES, FederationRelationship
from hallmark.bundle import DEFAULT_REFRESH_HINT, Bundle
from hallmark.errors import HallmarkError
from hallmark.spiffeid import SpiffeId, TrustDomain
from tenants.events import publish_change
from tenants.scoping import current_tenant
from tenants.services import record_audit

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "system:federation-refresh"
MIN_REFRESH_SECONDS = 10  # a peer's hint below this is raised to it (a hint of 0 is not a loop)
NO_BUNDLE_RETRY_SECONDS = 60  # SPIRE: with no bundle yet, try every minute
MAX_BACKOFF_SECONDS = 3600
JITTER = 0.1


class BundleRefused(fetcher.BundleEndpointError):
    """The endpoint answered, but with a bundle that must not replace the one held."""


class NoBundleEndpoint(HallmarkError):
    """A relationship without a URL (or a managed one) has nothing to fetch."""

    code = "no_bundle_endpoint"
    http_status = 409


def refresh_interval(bundle_json: Any) -> float:
    """Seconds until the next poll: the held bundle's `spiffe_refresh_hint` (SPIRE's 300 s
    default without one), at least MIN_REFRESH_SECONDS, at most the operator's cap."""
    hint = bundle_json.get("spiffe_refresh_hint") if isinstance(bundle_json, dict) else None
    seconds = float(hint) if isinstance(hint, int) and hint > 0 else float(DEFAULT_REFRESH_HINT)
    seconds = max(seconds, MIN_REFRESH_SECONDS)
    cap = int(getattr(settings, "FEDERATION_MAX_REFRESH_SECONDS", 0) or 0)
    return min(seconds, cap) if cap > 0 else seconds


def _jittered(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=max(seconds * random.uniform(1 - JITTER, 1 + JITTER), 0.5))  # noqa: S311


def _backoff(relationship: FederationRelationship, failures: int) -> float:
    base = (
        refresh_interval(relationship.bundle_json)
        if relationship.bundle_json
        else min(NO_BUNDLE_RETRY_SECONDS, refresh_interval(None))
    )
    return float(min(base * 2 ** max(failures - 1, 0), MAX_BACKOFF_SECONDS))


def warnings(relationship: FederationRelationship) -> list[dict[str, str]]:
    """What an operator should know: a peer CA that lives less than three refresh intervals
    may rotate out between two polls that both fail."""
    if not relationship.bundle_json or relationship.bundle_endpoint_profile not in FETCHED_PROFILES:
        return []
    try:
        bundle = Bundle.parse(TrustDomain(relationship.trust_domain), relationship.bundle_json)
    except HallmarkError:
        return []
    interval = refresh_interval(relationship.bundle_json)
    for authority in bundle.x509_authorities:
        lifetime = authority.not_valid_after_utc - authority.not_valid_before_utc
        if lifetime.total_seconds() < 3 * interval:
            return [
                {
                    "code": "ca_lifetime_shorter_than_three_refresh_intervals",
                    "detail": f"a CA of {relationship.trust_domain} lives {lifetime}, less than "
                    f"three refresh intervals of {interval:.0f}s: a missed refresh may leave "
                    "its workloads untrusted",
                }
            ]
    return []


def _roots_for(relationship: FederationRelationship) -> bytes:
    """The bundle that authenticates an https_spiffe endpoint: its own trust domain's."""
    from trustdomains.services import current_bundle

    endpoint_td = SpiffeId.parse(relationship.endpoint_spiffe_id).trust_domain.name
    if endpoint_td == relationship.trust_domain:
        held = relationship.bundle_json  # self-serving: the latest held bundle (5.2.2.4)
    elif endpoint_td == current_tenant().trust_domain:
        return current_bundle().x509_pem()
    else:
        other = FederationRelationship.objects.filter(trust_domain=endpoint_td).first()
        held = other.bundle_json if other is not None else None
    if not held:
        return b""
    try:
        return Bundle.parse(TrustDomain(endpoint_td), held).x509_pem()
    except HallmarkError:
        return b""


def _accept(relationship: FederationRelationship, body: bytes) -> tuple[dict[str, Any], Bundle]:
    """The fetched document if it may replace the held one; raises BundleRefused otherwise."""
    domain = TrustDomain(relationship.trust_domain)
    try:
        document = json.loads(body.decode("utf-8"))
        bundle = Bundle.parse(domain, document, strict=True)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BundleRefused(
            "the endpoint's answer is not a JSON document", code="bundle_malformed"
        ) from None
    except HallmarkError as exc:
        raise BundleRefused(exc.detail, code=exc.code) from None
    if not bundle.x509_authorities:
        raise BundleRefused(
            "the fetched bundle holds no X.509 authorities", code="bundle_without_x509_authorities"
        )
    for authority in bundle.x509_authorities:
        try:
            san = authority.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            continue
        for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith("spiffe://") and SpiffeId.parse(uri).trust_domain != domain:
                raise BundleRefused(
                    f"the fetched bundle holds an authority of {uri}, not of {domain.name}",
                    code="bundle_wrong_trust_domain",
                )
    if bundle.sequence < relationship.bundle_sequence:
        raise BundleRefused(
            f"the fetched bundle's sequence {bundle.sequence} is lower than the held "
            f"{relationship.bundle_sequence}",
            code="bundle_sequence_lower",
        )
    return document, bundle


def refresh_relationship(
    *, trust_domain: str, actor: str = SYSTEM_ACTOR, source: str = ""
) -> FederationRelationship:
    """Fetch the relationship's bundle now; raises BundleEndpointError (the held bundle kept)."""
    tenant = current_tenant()
    relationship = FederationRelationship.objects.get(trust_domain=trust_domain)
    if not relationship.is_fetched:
        raise NoBundleEndpoint("this relationship has no bundle endpoint to fetch from")
    error: fetcher.BundleEndpointError | None = None
    try:
        endpoint = fetcher.Endpoint(
            url=relationship.bundle_endpoint_url,
            profile=relationship.bundle_endpoint_profile,
            trust_domain=relationship.trust_domain,
            endpoint_spiffe_id=relationship.endpoint_spiffe_id,
            roots_pem=_roots_for(relationship)
            if relationship.bundle_endpoint_profile == "https_spiffe"
            else b"",
            ca_bundle=settings.FEDERATION_CA_BUNDLE,
        )
        body = fetcher.fetch(endpoint, fetcher.parse_networks(settings.FEDERATION_ALLOWED_NETWORKS))
        document, bundle = _accept(relationship, body)
    except fetcher.BundleEndpointError as exc:
        error = exc
    except HallmarkError as exc:
        error = fetcher.BundleEndpointError(exc.detail)
    now = timezone.now()
    with transaction.atomic():
        locked = FederationRelationship.objects.select_for_update().get(pk=relationship.pk)
        if error is None and bundle.sequence < locked.bundle_sequence:
            error = BundleRefused("a newer bundle arrived meanwhile", code="bundle_sequence_lower")
        locked.last_refresh_at = now
        changed = False
        if error is None:
            changed = document != locked.bundle_json
            if changed:
                locked.bundle_json = document
                locked.bundle_sequence = bundle.sequence
                locked.bundle_updated_at = now
            locked.last_error = ""
            locked.refresh_failures = 0
            locked.next_refresh_at = now + _jittered(refresh_interval(locked.bundle_json))
        else:
            locked.last_error = f"{error.code}: {error.detail}"
            locked.refresh_failures += 1
            locked.next_refresh_at = now + _jittered(_backoff(locked, locked.refresh_failures))
        locked.save()
        if actor != SYSTEM_ACTOR or changed or (error is not None and locked.refresh_failures == 1):
            record_audit(
                tenant=tenant,
                actor=actor,
                action="federation.refresh",
                target=locked.trust_domain,
                outcome="success" if error is None else "failure",
                source=source,
                detail={"sequence": locked.bundle_sequence, "changed": changed}
                if error is None
                else {"code": error.code, "detail": error.detail[:500]},
            )
        if changed:
            publish_change(tenant_id=tenant.id, kind="federation")
    outcome = error.code if error is not None else ("changed" if changed else "unchanged")
    metrics.FEDERATION_FETCHES.labels(relationship.bundle_endpoint_profile, outcome).inc()
    if error is not None:
        log.info("federation refresh of %s failed: %s", trust_domain, locked.last_error)
        raise error
    return locked
