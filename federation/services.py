"""Writes and reads of federation relationships; every write is audited and pushed to agents."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from federation.models import FederationRelationship
from hallmark.bundle import MAX_BUNDLE_BYTES, Bundle
from hallmark.errors import HallmarkError, InvalidBundle
from hallmark.spiffeid import SpiffeId, TrustDomain
from tenants.events import publish_change
from tenants.scoping import current_tenant
from tenants.services import record_audit

log = logging.getLogger(__name__)


class FederationError(HallmarkError):
    """A federation relationship that cannot be stored as asked."""

    code = "invalid_federation_relationship"


class RelationshipExists(FederationError):
    code = "federation_relationship_exists"
    http_status = 409


def _parse_bundle(trust_domain: TrustDomain, document: Any) -> tuple[dict[str, Any], int]:
    """A foreign bundle as stored: parsed strictly, bounded in size, with at least one key."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except (ValueError, RecursionError):
            raise InvalidBundle("trust_domain_bundle is not JSON") from None
    try:
        size = len(json.dumps(document, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        raise InvalidBundle("trust_domain_bundle is not a JSON document") from None
    if size > MAX_BUNDLE_BYTES:
        raise InvalidBundle(
            f"trust_domain_bundle is larger than {MAX_BUNDLE_BYTES} bytes", code="bundle_too_large"
        )
    bundle = Bundle.parse(trust_domain, document, strict=True)
    if not bundle.x509_authorities and not bundle.jwt_authorities:
        raise InvalidBundle("trust_domain_bundle holds no x509-svid or jwt-svid keys")
    return document, bundle.sequence


def _validate(fields: dict[str, Any], trust_domain: TrustDomain) -> dict[str, Any]:
    own = current_tenant().trust_domain
    if trust_domain.name == own:
        raise FederationError("a trust domain cannot federate with itself", code="self_federation")
    clean: dict[str, Any] = {}
    for name in ("bundle_endpoint_url", "bundle_endpoint_profile"):
        if name in fields:
            clean[name] = fields[name] or ""
    if clean.get("bundle_endpoint_profile") == "managed":
        raise FederationError(
            "managed relationships are made by approving a federation request",
            code="invalid_profile",
        )
    if clean.get("bundle_endpoint_url"):
        from federation.fetcher import BundleEndpointError, check_url

        try:
            check_url(clean["bundle_endpoint_url"])
        except BundleEndpointError as exc:
            raise FederationError(exc.detail, code=exc.code) from None
    if "endpoint_spiffe_id" in fields:
        text = fields["endpoint_spiffe_id"] or ""
        if text:
            SpiffeId.parse(text)
        clean["endpoint_spiffe_id"] = text
    if clean.get("bundle_endpoint_profile") == "https_spiffe" and not clean.get(
        "endpoint_spiffe_id", fields.get("endpoint_spiffe_id")
    ):
        raise FederationError("https_spiffe needs endpoint_spiffe_id", code="invalid_profile")
    if fields.get("trust_domain_bundle") is not None:
        document, sequence = _parse_bundle(trust_domain, fields["trust_domain_bundle"])
        clean.update(
            bundle_json=document, bundle_sequence=sequence, bundle_updated_at=timezone.now()
        )
    return clean


def create_relationship(
    *, trust_domain: str, actor: str, source: str = "", **fields: Any
) -> FederationRelationship:
    domain = TrustDomain.parse(trust_domain)
    clean = _validate(fields, domain)
    tenant = current_tenant()
    with transaction.atomic():
        if FederationRelationship.objects.filter(trust_domain=domain.name).exists():
            raise RelationshipExists(f"a relationship with {domain.name} exists; PATCH it")
        relationship = FederationRelationship.objects.create(trust_domain=domain.name, **clean)
        # A relationship with an endpoint is fetched by the next sweep (next_refresh_at None).
        record_audit(
            tenant=tenant,
            actor=actor,
            action="federation.create",
            target=domain.name,
            source=source,
        )
        publish_change(tenant_id=tenant.id, kind="federation")
    return relationship


def update_relationship(
    *, relationship: FederationRelationship, actor: str, source: str = "", **fields: Any
) -> FederationRelationship:
    if relationship.bundle_endpoint_profile == FederationRelationship.Profile.MANAGED:
        raise RelationshipExists(
            "a managed relationship follows the peer tenant's bundle; end it to change it",
            code="managed_relationship",
        )
    clean = _validate(fields, TrustDomain(relationship.trust_domain))
    tenant = current_tenant()
    with transaction.atomic():
        locked = FederationRelationship.objects.select_for_update().get(pk=relationship.pk)
        for name, value in clean.items():
            setattr(locked, name, value)
        if {"bundle_endpoint_url", "bundle_endpoint_profile", "endpoint_spiffe_id"} & set(clean):
            locked.next_refresh_at = None  # a changed endpoint is fetched by the next sweep
            locked.refresh_failures = 0
        locked.save()
        record_audit(
            tenant=tenant,
            actor=actor,
            action="federation.update",
            target=locked.trust_domain,
            source=source,
            detail={"fields": sorted(clean)},
        )
        publish_change(tenant_id=tenant.id, kind="federation")
    return locked


def delete_relationship(
    *, relationship: FederationRelationship, actor: str, source: str = ""
) -> None:
    tenant = current_tenant()
    if relationship.bundle_endpoint_profile == FederationRelationship.Profile.MANAGED:
        from federation.managed.services import end_federation

        end_federation(
            tenant=tenant, trust_domain=relationship.trust_domain, actor=actor, source=source
        )
        return
    with transaction.atomic():
        relationship.delete()
        record_audit(
            tenant=tenant,
            actor=actor,
            action="federation.delete",
            target=relationship.trust_domain,
            source=source,
        )
        publish_change(tenant_id=tenant.id, kind="federation")


def federated_bundles(names: Iterable[str]) -> dict[str, Bundle]:
    """The bundles held for these foreign trust domains (call in the tenant's schema)."""
    wanted = {n for n in names if n}
    if not wanted:
        return {}
    found: dict[str, Bundle] = {}
    managed = FederationRelationship.objects.filter(
        trust_domain__in=wanted, bundle_endpoint_profile=FederationRelationship.Profile.MANAGED
    )
    for name in managed.values_list("trust_domain", flat=True):
        bundle = managed_peer_bundle(name)
        if bundle is not None:
            found[name] = bundle
    rows = FederationRelationship.objects.filter(trust_domain__in=wanted, bundle_json__isnull=False)
    for row in rows.exclude(bundle_endpoint_profile=FederationRelationship.Profile.MANAGED):
        # One bad stored bundle (kept from before input checks tightened) must not take the
        # tenant's own bundle down with it: it is left out and logged.
        try:
            found[row.trust_domain] = Bundle.parse(TrustDomain(row.trust_domain), row.bundle_json)
        except HallmarkError as exc:
            log.warning("federated bundle of %s left out: %s", row.trust_domain, exc.detail)
    return found


def managed_peer_bundle(trust_domain: str) -> Bundle | None:
    """The published bundle of the platform tenant with this trust domain, read now (its
    public keys only; cached by sequence), for a managed relationship. None if it is gone."""
    from tenants.scoping import get_tenant_by_trust_domain, tenant_schema
    from trustdomains.services import current_bundle

    peer = get_tenant_by_trust_domain(trust_domain)
    if peer is None:
        return None
    try:
        with tenant_schema(peer):
            return current_bundle()
    except HallmarkError as exc:
        log.warning("bundle of managed peer %s left out: %s", trust_domain, exc.detail)
        return None
