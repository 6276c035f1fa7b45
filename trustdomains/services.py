"""Trust domain services: CA and JWT keys in a key manager, bundles, signing SVIDs.

Every function except `discard_key_material` runs with the connection already in the
tenant's schema (the request's token or `tenants.scoping.tenant_schema` put it there).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hallmark.bundle import DEFAULT_REFRESH_HINT, Bundle
from hallmark.bundle import JwtAuthority as BundleJwtAuthority
from hallmark.errors import HallmarkError, InvalidSvid
from hallmark.jwtsvid import JwtSvidRequest
from hallmark.jwtsvid import mint_jwt_svids as mint_jwt_svids_with
from hallmark.spiffeid import TrustDomain as SpiffeTrustDomain
from hallmark.x509svid import LeafRequest, build_leaves
from tenants.scoping import current_tenant, tenant_schema
from tenants.services import record_audit
from trustdomains import authorities, bundles, journal, jwtauthorities, localauthority
from trustdomains import upstream as upstreams
from trustdomains.jwtauthorities import jwt_svid_ttl
from trustdomains.keymanagers import KeyManagerUnavailable, get_key_manager
from trustdomains.models import JwtAuthority, TrustDomain, X509Authority

if TYPE_CHECKING:
    from tenants.models import Tenant

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "system:hallmark"


class TrustDomainNotProvisioned(HallmarkError):
    """The tenant schema has no trust domain (signup did not finish)."""

    code = "trust_domain_not_provisioned"
    http_status = 409


class TrustDomainExists(HallmarkError):
    """A tenant schema holds exactly one trust domain."""

    code = "trust_domain_exists"
    http_status = 409


class NoActiveAuthority(HallmarkError):
    """No X.509 authority can sign right now."""

    code = "no_active_x509_authority"
    http_status = 503


def provision_trust_domain(
    *, tenant: Tenant, name: str, upstream_authority: str = "", actor: str = SYSTEM_ACTOR
) -> TrustDomain:
    """Create the tenant's trust domain, its first active X.509 CA and JWT signing key.

    Both keys are generated inside the key manager; the CA certificate is self-signed there,
    or signed by `upstream_authority` over a CSR the key manager signed. The database gets
    public material and key references only. If this fails after the key was created, the
    caller compensates with `discard_key_material`.
    """
    current_tenant()
    domain = SpiffeTrustDomain(name)
    if TrustDomain.objects.exists():
        raise TrustDomainExists("this tenant already has a trust domain")
    if upstream_authority:
        upstreams.get(upstream_authority, trust_domain=domain.name)  # refuse before any key
    manager_name = settings.DEFAULT_KEY_MANAGER
    manager = get_key_manager(manager_name)
    key_ref = manager.create_key(tenant_id=tenant.id, purpose="x509")
    ca = authorities.issue_ca(
        domain, manager.signer(key_ref), upstream=upstream_authority, now=timezone.now()
    )
    certificate = ca.certificate
    jwt_key = jwtauthorities.create_key(manager, tenant.id)
    with transaction.atomic():
        trust_domain = TrustDomain.objects.create(
            name=domain.name, key_manager=manager_name, upstream_authority=upstream_authority
        )
        jwt_authority = jwtauthorities.store(
            trust_domain, manager_name, jwt_key, JwtAuthority.Status.ACTIVE
        )
        authority = X509Authority.objects.create(
            trust_domain=trust_domain,
            status=X509Authority.Status.ACTIVE,
            key_manager=manager_name,
            key_ref=key_ref,
            **ca.row_fields(),
        )
        record_audit(
            tenant=tenant,
            actor=actor,
            action="trust_domain.provision",
            target=domain.name,
            detail={
                "key_manager": manager_name,
                "upstream_authority": upstream_authority,
                "x509_authority": str(authority.id),
                "jwt_authority": str(jwt_authority.id),
                "jwt_key_id": jwt_authority.key_id,
                "not_after": certificate.not_valid_after_utc.isoformat(),
            },
        )
        bundles.announce_change(tenant)
    log.info("provisioned trust domain %s with X.509 authority %s", domain.name, authority.id)
    return trust_domain


def discard_key_material(*, tenant: Tenant) -> None:
    """Destroy the tenant's keys and key-manager credentials (compensation for a failed signup).

    Works from any schema: keys are found by the tenant's name prefix in the key manager.
    Provisioning uses the default key manager; authorities that survive in the tenant's
    schema name theirs too, and every one of those is cleaned.
    """
    names = {settings.DEFAULT_KEY_MANAGER} | _recorded_key_managers(tenant)
    for name in sorted(names):
        get_key_manager(name).delete_keys(tenant_id=tenant.id)
    log.info("discarded key material of tenant %s in %s", tenant.id, ", ".join(sorted(names)))


def _recorded_key_managers(tenant: Tenant) -> set[str]:
    """Key managers named by the tenant's stored authorities (none if its schema is gone)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            [tenant.schema_name, X509Authority._meta.db_table],
        )
        if cursor.fetchone() is None:
            return set()
    with tenant_schema(tenant):
        return set(X509Authority.objects.values_list("key_manager", flat=True)) | set(
            JwtAuthority.objects.values_list("key_manager", flat=True)
        )


def get_trust_domain() -> TrustDomain:
    """The trust domain of the tenant whose schema the connection is in."""
    current_tenant()
    trust_domain = TrustDomain.objects.first()
    if trust_domain is None:
        raise TrustDomainNotProvisioned("this tenant has no trust domain yet")
    return trust_domain


def dns_names_confined_to_trust_domain() -> bool:
    """Whether the trust domain's upstream signs its CAs with a DNS name constraint (then an
    SVID may carry only DNS names under the trust domain)."""
    name = get_trust_domain().upstream_authority
    upstream = upstreams.configured().get(name) if name else None
    return upstream is not None and upstream.dns_name_constraints


def set_upstream_authority(name: str, *, actor: str, source: str = "") -> TrustDomain:
    """Choose who certifies the CAs prepared from now on: an upstream authority, or "" (self).

    The active CA keeps signing until rotation (or a forced prepare and activate) replaces
    it; the new CA's trust anchors are in the bundle from the moment it is prepared. A
    refused name is audited as denied and changes nothing.
    """
    tenant = current_tenant()
    trust_domain = get_trust_domain()
    name = name.strip()
    audit = {"tenant": tenant, "actor": actor, "source": source, "target": trust_domain.name}
    if name:
        try:
            upstreams.get(name, trust_domain=trust_domain.name)
        except upstreams.UnknownUpstreamAuthority as exc:
            record_audit(
                action="trust_domain.set_upstream_authority",
                outcome="denied",
                detail={"upstream_authority": name, "code": exc.code},
                **audit,
            )
            raise
    with transaction.atomic():
        trust_domain = TrustDomain.objects.select_for_update().get(pk=trust_domain.pk)
        previous = trust_domain.upstream_authority
        trust_domain.upstream_authority = name
        trust_domain.save(update_fields=["upstream_authority"])
        record_audit(
            action="trust_domain.set_upstream_authority",
            detail={"upstream_authority": name, "previous": previous},
            **audit,
        )
    return trust_domain


def published_x509_authorities(trust_domain: TrustDomain) -> list[X509Authority]:
    """Authorities in the bundle: prepared, active or old; neither revoked nor pruned.

    An expired CA stays until rotation prunes it (with a sequence bump), so the published
    bundle never changes without a new `spiffe_sequence`.
    """
    return list(trust_domain.x509_authorities.published())


def current_bundle() -> Bundle:
    """The tenant's SPIFFE bundle as published now (cached by sequence, trustdomains.bundles)."""
    trust_domain = get_trust_domain()
    return bundles.published(
        current_tenant(), trust_domain.name, trust_domain.bundle_sequence, build_bundle
    )


def build_bundle() -> tuple[Bundle, bool]:
    """The bundle from the journal, and whether it is complete (it has its JWT keys)."""
    trust_domain = get_trust_domain()
    jwt_authorities = jwtauthorities.published(trust_domain)
    if not jwt_authorities:
        # A trust domain provisioned before JWT keys existed gets one now (once, under a
        # lock). The bundle is still served when the key manager is down: X.509 needs no key.
        try:
            ensure_jwt_authority()
        except KeyManagerUnavailable as exc:
            log.warning("bundle of %s served without JWT keys: %s", trust_domain.name, exc)
        trust_domain.refresh_from_db()
        jwt_authorities = jwtauthorities.published(trust_domain)
    bundle = Bundle(
        trust_domain=SpiffeTrustDomain(trust_domain.name),
        x509_authorities=_trust_anchors(published_x509_authorities(trust_domain)),
        jwt_authorities=tuple(
            BundleJwtAuthority(key_id=a.key_id, public_key=a.public_key) for a in jwt_authorities
        ),
        sequence=trust_domain.bundle_sequence,
        refresh_hint=DEFAULT_REFRESH_HINT,
    )
    return bundle, bool(jwt_authorities)


def published_intermediates() -> list[x509.Certificate]:
    """The upstream-signed CAs in the journal and the intermediates above them.

    A TLS peer presents only its leaf to Python's `getpeercert`; these complete its chain up
    to the bundle's upstream roots. Empty for a self-signed trust domain.
    """
    intermediates: list[x509.Certificate] = []
    for authority in published_x509_authorities(get_trust_domain()):
        if authority.upstream_authority:
            intermediates += [authority.certificate, *authority.upstream_intermediates]
    return intermediates


def _trust_anchors(authorities: Sequence[X509Authority]) -> tuple[x509.Certificate, ...]:
    """Each published CA itself, or the upstream roots above it: once each, oldest first."""
    anchors: dict[bytes, x509.Certificate] = {}
    for authority in authorities:
        for anchor in authority.trust_anchors:
            anchors.setdefault(anchor.public_bytes(serialization.Encoding.DER), anchor)
    return tuple(anchors.values())


def active_x509_authority() -> X509Authority:
    trust_domain = get_trust_domain()
    authority = (
        trust_domain.x509_authorities.filter(
            status=X509Authority.Status.ACTIVE, revoked=False, not_after__gt=timezone.now()
        )
        .order_by("-not_before")
        .first()
    )
    if authority is None:
        raise NoActiveAuthority(f"trust domain {trust_domain.name} has no active X.509 authority")
    return authority


def _require_in_trust_domain(
    requests: Sequence[LeafRequest] | Sequence[JwtSvidRequest], name: str
) -> None:
    """Refuse to sign for any SPIFFE ID outside this tenant's trust domain."""
    for request in requests:
        if request.spiffe_id.trust_domain.name != name:
            raise InvalidSvid(
                f"{request.spiffe_id} is not in trust domain {name}",
                code="spiffe_id_outside_trust_domain",
            )


def sign_x509_svids(requests: Sequence[LeafRequest]) -> list[list[x509.Certificate]]:
    """Sign leaf X.509-SVIDs with the active authority, in one key-manager batch.

    Each result is the chain to hand out, leaf first. A self-signed CA is in the bundle, not
    in the chain; an upstream-signed CA and the upstream's intermediates follow the leaf, and
    the bundle holds the upstream's roots. Every SPIFFE ID must be in this tenant's trust
    domain.
    """
    if not requests:
        return []
    authority = active_x509_authority()
    _require_in_trust_domain(requests, authority.trust_domain.name)
    signer = get_key_manager(authority.key_manager).signer(authority.key_ref)
    ca = authority.certificate
    leaves = build_leaves(requests, ca=ca, signer=signer)
    above = [ca, *authority.upstream_intermediates] if authority.upstream_authority else []
    return [[leaf, *above] for leaf in leaves]


# -- JWT authorities and JWT-SVIDs -------------------------------------------------------------
def published_jwt_authorities(trust_domain: TrustDomain) -> list[JwtAuthority]:
    """JWT keys in the bundle: prepared, active or old; not revoked and not expired."""
    return jwtauthorities.published(trust_domain)


def ensure_jwt_authority(*, actor: str = SYSTEM_ACTOR) -> JwtAuthority:
    """The active JWT authority; created (once, even with racing processes) if there is none.

    Trust domains provisioned before JWT-SVIDs existed, or whose active key expired, get a
    new active key here: the key manager is called under the trust domain's row lock, so
    concurrent callers wait and then reuse the winner's key.
    """
    trust_domain = get_trust_domain()
    existing = jwtauthorities.usable(trust_domain)
    if existing is not None:
        return existing
    with transaction.atomic():
        return jwtauthorities.add(
            trust_domain.pk,
            tenant=current_tenant(),
            status=JwtAuthority.Status.ACTIVE,
            action="jwt_authority.create",
            actor=actor,
        )


def prepare_jwt_authority(*, actor: str) -> JwtAuthority:
    """Add a prepared JWT key: published in the bundle at once, not signing yet."""
    authority = localauthority.prepare(authorities.JWT, actor=actor)
    assert isinstance(authority, JwtAuthority)  # noqa: S101 - the JWT kind makes JWT rows
    return authority


def rotate(*, now: dt.datetime | None = None) -> list[authorities.JournalChange]:
    """Scheduled rotation of the tenant's X.509 and JWT journals (see trustdomains.journal)."""
    return journal.rotate(now=now)


def mint_jwt_svids(requests: Sequence[JwtSvidRequest]) -> list[str]:
    """Mint JWT-SVIDs with the active JWT authority, all signed in one key-manager batch.

    Each header carries the authority's `kid`; `exp` is clamped to the authority's not_after.
    Every SPIFFE ID must be in this tenant's trust domain.
    """
    if not requests:
        return []
    authority = ensure_jwt_authority()
    _require_in_trust_domain(requests, authority.trust_domain.name)
    now = timezone.now()
    clamped = [
        dataclasses.replace(r, ttl=jwt_svid_ttl(r.ttl, not_after=authority.not_after, now=now))
        for r in requests
    ]
    signer = jwtauthorities.StoredKeySigner(
        get_key_manager(authority.key_manager).signer(authority.key_ref), authority.public_key
    )
    return mint_jwt_svids_with(clamped, key_id=authority.key_id, signer=signer, now=now)
