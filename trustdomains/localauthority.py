"""Forced journal operations, as SPIRE's localauthority API: prepare, activate, taint, revoke.

- prepare: a new authority, published at once, not signing (409 if one is already prepared);
- activate: only the prepared one; the active one becomes old;
- taint: only an old one (activate its successor first); agents replace what it signed;
- revoke: only a tainted one; it leaves the bundle.

Each runs under the trust domain's row lock, bumps the bundle sequence, is audited and
announces a "bundle" change. A refused operation is audited too (outcome "denied"; "failure"
when the key manager is down).

Each prepare makes a key in the key manager, so forced prepares are bounded: a trust domain
holds at most HALLMARK_MAX_AUTHORITIES authorities of a kind until they are pruned (409
`too_many_authorities`), and makes at most HALLMARK_FORCED_PREPARES_PER_HOUR forced prepares
of a kind an hour (429 `rotation_rate_limited`, with the seconds to wait). The window is read
from the audit trail, which every replica shares.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hallmark.errors import HallmarkError
from tenants.models import AuditEvent
from tenants.scoping import current_tenant
from tenants.services import record_audit
from trustdomains.authorities import Authority, AuthorityKind, JournalChange, publish_changes
from trustdomains.models import TrustDomain

log = logging.getLogger(__name__)
RATE_WINDOW = dt.timedelta(hours=1)


class AuthorityNotFound(HallmarkError):
    """No such authority in the caller's trust domain (also the answer for another tenant's)."""

    code = "not_found"
    http_status = 404


class AuthorityConflict(HallmarkError):
    """The authority is not in the journal state the operation needs; `code` says which."""

    code = "authority_conflict"
    http_status = 409


class AuthorityRateLimited(HallmarkError):
    """Too many forced prepares of this kind in the last hour; `retry_after` says how long."""

    code = "rotation_rate_limited"
    http_status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def _locked_trust_domain() -> TrustDomain:
    trust_domain = TrustDomain.objects.select_for_update().first()
    if trust_domain is None:
        raise AuthorityConflict(
            "this tenant has no trust domain yet", code="trust_domain_not_provisioned"
        )
    return trust_domain


def _audited(
    kind: AuthorityKind,
    operation: str,
    target: str,
    *,
    actor: str,
    source: str,
    change: Callable[[TrustDomain], Authority],
) -> Authority:
    tenant = current_tenant()
    try:
        with transaction.atomic():
            trust_domain = _locked_trust_domain()
            authority = change(trust_domain)
            publish_changes(
                trust_domain,
                tenant=tenant,
                changes=[
                    JournalChange(kind.name, operation, str(authority.pk), kind.target(authority))
                ],
                actor=actor,
                source=source,
            )
    except HallmarkError as exc:  # refused, or the key manager is down: audited, then raised
        refused = isinstance(exc, AuthorityConflict | AuthorityNotFound | AuthorityRateLimited)
        record_audit(
            tenant=tenant,
            actor=actor,
            action=f"{kind.name}_authority.{operation}",
            target=target,
            outcome="denied" if refused else "failure",
            source=source,
            detail={"code": exc.code, "detail": exc.detail},
        )
        raise
    log.info("%s forced %s of %s authority %s", actor, operation, kind.name, authority.pk)
    return authority


def prepare(
    kind: AuthorityKind, *, actor: str, source: str = "", now: dt.datetime | None = None
) -> Authority:
    """A new prepared authority in the trust domain's key manager, published in the bundle."""
    moment = now or timezone.now()

    def change(trust_domain: TrustDomain) -> Authority:
        prepared = next((a for a in kind.live(trust_domain.pk) if a.status == "prepared"), None)
        if prepared is not None:
            raise AuthorityConflict(
                f"{kind.name} authority {prepared.pk} is already prepared; activate it first",
                code="authority_already_prepared",
            )
        _refuse_unbounded(kind, trust_domain)
        created: Authority = kind.create(
            trust_domain, tenant=current_tenant(), status="prepared", now=moment
        )
        return created

    return _audited(kind, "prepare", "", actor=actor, source=source, change=change)


def _refuse_unbounded(kind: AuthorityKind, trust_domain: TrustDomain) -> None:
    """Bound the keys forced prepares create: authorities held, and prepares an hour."""
    held = kind.model.objects.filter(trust_domain_id=trust_domain.pk, pruned_at__isnull=True)
    if held.count() >= settings.MAX_AUTHORITIES:
        raise AuthorityConflict(
            f"the trust domain holds {settings.MAX_AUTHORITIES} {kind.name} authorities, the "
            "most it may; they leave when pruned after expiry",
            code="too_many_authorities",
        )
    since = timezone.now() - RATE_WINDOW
    recent = list(
        AuditEvent.objects.filter(
            tenant=current_tenant(),
            action=f"{kind.name}_authority.prepare",
            outcome="success",
            at__gte=since,
        )
        .exclude(actor__startswith="system:")
        .order_by("-at")
        .values_list("at", flat=True)[: settings.FORCED_PREPARES_PER_HOUR]
    )
    if len(recent) >= settings.FORCED_PREPARES_PER_HOUR:
        wait = max(1, math.ceil((recent[-1] - since).total_seconds()))
        raise AuthorityRateLimited(
            f"at most {settings.FORCED_PREPARES_PER_HOUR} forced prepares of {kind.name} "
            f"authorities an hour; try again in {wait} s",
            retry_after=wait,
        )


def activate(
    kind: AuthorityKind,
    authority_id: object,
    *,
    actor: str,
    source: str = "",
    now: dt.datetime | None = None,
) -> Authority:
    """The prepared authority becomes active; the active one becomes old."""
    moment = now or timezone.now()

    def change(trust_domain: TrustDomain) -> Authority:
        authority = _find(kind, trust_domain, authority_id)
        if authority.status != "prepared" or authority.revoked or authority.pruned_at:
            raise AuthorityConflict(
                f"{kind.name} authority {authority.pk} is {authority.status}, not prepared",
                code="authority_not_prepared",
            )
        if authority.not_after <= moment:
            raise AuthorityConflict(
                f"{kind.name} authority {authority.pk} has expired", code="authority_expired"
            )
        kind.demote_active(kind.live(trust_domain.pk))
        authority.status = "active"
        authority.save(update_fields=["status"])
        return authority

    return _audited(kind, "activate", str(authority_id), actor=actor, source=source, change=change)


def taint(kind: AuthorityKind, authority_id: object, *, actor: str, source: str = "") -> Authority:
    """Mark an old authority tainted: agents must replace everything it signed."""

    def change(trust_domain: TrustDomain) -> Authority:
        authority = _find(kind, trust_domain, authority_id)
        _refuse_revoked(kind, authority)
        if authority.status != "old":
            raise AuthorityConflict(
                f"{kind.name} authority {authority.pk} is {authority.status}; only an old "
                "authority can be tainted (activate its successor first)",
                code="authority_not_old",
            )
        if authority.tainted:
            raise AuthorityConflict(
                f"{kind.name} authority {authority.pk} is already tainted",
                code="authority_already_tainted",
            )
        authority.tainted = True
        authority.save(update_fields=["tainted"])
        return authority

    return _audited(kind, "taint", str(authority_id), actor=actor, source=source, change=change)


def revoke(kind: AuthorityKind, authority_id: object, *, actor: str, source: str = "") -> Authority:
    """Remove a tainted authority from the bundle; what it signed no longer verifies."""

    def change(trust_domain: TrustDomain) -> Authority:
        authority = _find(kind, trust_domain, authority_id)
        _refuse_revoked(kind, authority)
        if getattr(authority, "upstream_authority", ""):
            raise AuthorityConflict(
                f"{kind.name} authority {authority.pk} is signed by upstream authority "
                f"{authority.upstream_authority!r}: the bundle holds the upstream's root, not "
                "this CA, so revoking it here would not stop what it signed from verifying. "
                "Taint it (agents replace everything it signed) and revoke it at the upstream",
                code="upstream_signed_authority",
            )
        if not authority.tainted:
            raise AuthorityConflict(
                f"{kind.name} authority {authority.pk} must be tainted before it is revoked",
                code="authority_not_tainted",
            )
        authority.revoked = True
        authority.save(update_fields=["revoked"])
        return authority

    return _audited(kind, "revoke", str(authority_id), actor=actor, source=source, change=change)


def _find(kind: AuthorityKind, trust_domain: TrustDomain, authority_id: object) -> Authority:
    authority = kind.get(trust_domain.pk, authority_id)
    if authority is None:
        raise AuthorityNotFound(f"no {kind.name} authority {authority_id}")
    return authority


def _refuse_revoked(kind: AuthorityKind, authority: Authority) -> None:
    if authority.revoked:
        raise AuthorityConflict(
            f"{kind.name} authority {authority.pk} is already revoked",
            code="authority_already_revoked",
        )
