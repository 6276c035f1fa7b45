"""The two kinds of authority (X.509 CA, JWT key) and the bookkeeping every journal change shares.

Rotation (`trustdomains.journal`) and forced operations (`trustdomains.localauthority`) both
change the journal through these: a new authority is created in the trust domain's own key
manager (key first, row second), and each committed change bumps the bundle sequence, is
audited and announces a "bundle" change to agents.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.utils import timezone

from hallmark.bundle import der_chain
from hallmark.errors import HallmarkError
from hallmark.signing import Signer
from hallmark.spiffeid import TrustDomain as SpiffeTrustDomain
from hallmark.x509svid import BACKDATE, build_signing_certificate
from tenants.services import record_audit
from trustdomains import bundles, jwtauthorities
from trustdomains import upstream as upstreams
from trustdomains.keymanagers import KeyManager, get_key_manager
from trustdomains.models import JwtAuthority, TrustDomain, X509Authority

if TYPE_CHECKING:
    from tenants.models import Tenant

log = logging.getLogger(__name__)
Authority = X509Authority | JwtAuthority


@dataclass(frozen=True)
class JournalChange:
    """One journal step that changed the bundle: `operation` on an authority of `kind`."""

    kind: str
    operation: str
    authority_id: str
    target: str


@dataclass(frozen=True)
class AuthorityKind:
    """What differs between X.509 CAs and JWT keys; the journal rules are the same."""

    name: str
    model: type[X509Authority] | type[JwtAuthority]
    create: Callable[..., Any]
    target: Callable[[Any], str]

    def live(self, trust_domain_pk: int) -> list[Authority]:
        """The authorities still in the journal: neither revoked nor pruned, oldest first."""
        return list(
            self.model.objects.filter(
                trust_domain_id=trust_domain_pk, revoked=False, pruned_at__isnull=True
            ).order_by("not_before", "created_at")
        )

    def get(self, trust_domain_pk: int, authority_id: object) -> Authority | None:
        return self.model.objects.filter(trust_domain_id=trust_domain_pk, pk=authority_id).first()

    def demote_active(self, rows: Sequence[Authority]) -> Authority | None:
        """The active authority becomes old (call before another one becomes active)."""
        for authority in rows:
            if authority.status == "active":
                authority.status = "old"
                authority.save(update_fields=["status"])
                return authority
        return None


def self_signed_ca(
    domain: SpiffeTrustDomain, signer: Signer, *, now: dt.datetime
) -> x509.Certificate:
    """A self-signed CA certificate for the trust domain living CA_TTL_SECONDS from `now`."""
    certificate = build_signing_certificate(
        trust_domain=domain,
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now - BACKDATE,
        not_after=now + dt.timedelta(seconds=settings.CA_TTL_SECONDS),
    )
    # The key manager signed the TBS bytes; make sure the result is a valid self-signature.
    certificate.verify_directly_issued_by(certificate)
    return certificate


@dataclass(frozen=True)
class NewCa:
    """A CA certificate for a key in the key manager: self-signed, or signed by an upstream."""

    certificate: x509.Certificate
    upstream: str = ""
    intermediates: tuple[x509.Certificate, ...] = ()
    roots: tuple[x509.Certificate, ...] = ()

    def row_fields(self) -> dict[str, Any]:
        """The X509Authority fields that describe this certificate."""
        return {
            "certificate_der": self.certificate.public_bytes(serialization.Encoding.DER),
            "not_before": self.certificate.not_valid_before_utc,
            "not_after": self.certificate.not_valid_after_utc,
            "upstream_authority": self.upstream,
            "upstream_chain_der": der_chain(self.intermediates),
            "upstream_roots_der": der_chain(self.roots),
        }


def issue_ca(
    domain: SpiffeTrustDomain, signer: Signer, *, upstream: str, now: dt.datetime
) -> NewCa:
    """Certify the CA key behind `signer`: by the named upstream authority, else self-signed."""
    if not upstream:
        return NewCa(self_signed_ca(domain, signer, now=now))
    signed = upstreams.get(upstream, trust_domain=domain.name).sign_ca(
        domain, signer, ttl=dt.timedelta(seconds=settings.CA_TTL_SECONDS)
    )
    return NewCa(signed.certificate, upstream, signed.intermediates, signed.roots)


def _discard_key(manager: KeyManager, key_ref: str) -> None:
    try:
        manager.delete_key(key_ref)
    except HallmarkError as exc:  # the certification error matters more; keep the trace
        log.warning("could not delete the uncertified CA key %s: %s", key_ref, exc)


def create_x509_authority(
    trust_domain: TrustDomain, *, tenant: Tenant, status: str, now: dt.datetime
) -> X509Authority:
    """A new CA: key in the trust domain's key manager, certified (self or upstream), its row."""
    manager = get_key_manager(trust_domain.key_manager)
    key_ref = manager.create_key(tenant_id=tenant.id, purpose="x509")
    try:
        ca = issue_ca(
            SpiffeTrustDomain(trust_domain.name),
            manager.signer(key_ref),
            upstream=trust_domain.upstream_authority,
            now=now,
        )
    except HallmarkError:
        _discard_key(manager, key_ref)  # no row will ever name it
        raise
    return X509Authority.objects.create(
        trust_domain=trust_domain,
        status=status,
        key_manager=trust_domain.key_manager,
        key_ref=key_ref,
        **ca.row_fields(),
    )


def create_jwt_authority(
    trust_domain: TrustDomain, *, tenant: Tenant, status: str, now: dt.datetime
) -> JwtAuthority:
    """A new JWT key: created in the trust domain's key manager, then its row."""
    key = jwtauthorities.create_key(get_key_manager(trust_domain.key_manager), tenant.id)
    return jwtauthorities.store(trust_domain, trust_domain.key_manager, key, status, now=now)


X509 = AuthorityKind(
    name="x509", model=X509Authority, create=create_x509_authority, target=lambda a: str(a.pk)
)
JWT = AuthorityKind(
    name="jwt", model=JwtAuthority, create=create_jwt_authority, target=lambda a: a.key_id
)
KINDS = {kind.name: kind for kind in (X509, JWT)}


def publish_changes(
    trust_domain: TrustDomain,
    *,
    tenant: Tenant,
    changes: Sequence[JournalChange],
    actor: str,
    source: str = "",
) -> None:
    """Bump the bundle sequence once, audit each change, announce "bundle" after commit.

    Call inside the transaction holding the trust domain's row lock.
    """
    trust_domain.bundle_sequence += 1
    trust_domain.bundle_sequence_changed_at = timezone.now()
    trust_domain.save(update_fields=["bundle_sequence", "bundle_sequence_changed_at"])
    for change in changes:
        record_audit(
            tenant=tenant,
            actor=actor,
            action=f"{change.kind}_authority.{change.operation}",
            target=change.target,
            source=source,
            detail={
                f"{change.kind}_authority": change.authority_id,
                "bundle_sequence": trust_domain.bundle_sequence,
            },
        )
    bundles.announce_change(tenant)
