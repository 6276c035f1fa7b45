"""The authority journal: X.509 CAs and JWT keys move prepared → active → old, as in SPIRE.

`rotate(now=...)` is the scheduled rotation of one tenant (the connection is in its schema):

- prepare a new authority when the active one passes min(lifetime/2, 30 d) of its life; it is
  published in the bundle at once and signs nothing yet;
- activate the prepared one when the active passes min(lifetime/6, 7 d) before its end (never
  in the run that prepared it, so it was published before it signs); the active becomes old;
- prune authorities from the bundle PRUNE_GRACE_SECONDS after they expire (SPIRE: 24 h).

Every change takes the trust domain's row lock, re-reads the journal under it, bumps the
bundle sequence, is audited and announces a "bundle" change, all in one transaction. Steps
that need no new key (activate, prune) commit before steps that do, so an unreachable key
manager never holds back an activation. A key is created in the key manager under the lock and
before its row; if the transaction then fails, that key is an orphan nobody references or
publishes (non-exportable, destroyed with the tenant's keys by `delete_keys`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tenants.scoping import current_tenant
from trustdomains.authorities import (
    JWT,
    X509,
    Authority,
    AuthorityKind,
    JournalChange,
    publish_changes,
)
from trustdomains.models import TrustDomain

if TYPE_CHECKING:
    from tenants.models import Tenant

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "system:rotation"
MAX_PREPARE_LEAD = dt.timedelta(days=30)
MAX_ACTIVATE_LEAD = dt.timedelta(days=7)
DEFAULT_PRUNE_GRACE_SECONDS = 24 * 3600
MAX_STEPS = 16  # a journal needs a handful; this only bounds a bug


def prune_grace() -> dt.timedelta:
    """How long an expired authority stays in the bundle (settings.PRUNE_GRACE_SECONDS)."""
    return dt.timedelta(
        seconds=getattr(settings, "PRUNE_GRACE_SECONDS", DEFAULT_PRUNE_GRACE_SECONDS)
    )


def prepare_at(authority: Authority) -> dt.datetime:
    """When a successor is prepared: not_after − min(lifetime/2, 30 d)."""
    lifetime = authority.not_after - authority.not_before
    return authority.not_after - min(lifetime / 2, MAX_PREPARE_LEAD)


def activate_at(authority: Authority) -> dt.datetime:
    """When the successor takes over: not_after − min(lifetime/6, 7 d)."""
    lifetime = authority.not_after - authority.not_before
    return authority.not_after - min(lifetime / 6, MAX_ACTIVATE_LEAD)


@dataclass
class Journal:
    """The live (neither revoked nor pruned) authorities of one kind, as read under the lock."""

    rows: list[Authority]
    created: set[object] = field(default_factory=set)

    def with_status(self, status: str) -> Authority | None:
        return next((a for a in self.rows if a.status == status), None)


@dataclass(frozen=True)
class Step:
    """What the journal needs next; `authority` is None for steps that create one."""

    operation: str
    authority: Authority | None = None


def next_step(
    journal: Journal, *, now: dt.datetime, grace: dt.timedelta, keys: bool
) -> Step | None:
    """The next rotation step for the journal at `now`, or None when it is up to date.

    With `keys` False only steps that need no new key are considered.
    """
    active = journal.with_status("active")
    prepared = journal.with_status("prepared")
    if prepared is not None and prepared.not_after <= now:
        return Step("retire", prepared)  # never activated in time: it may not sign any more
    if active is None or active.not_after <= now:
        # Nothing can sign: take over with the prepared one, or make one that signs at once.
        if prepared is not None:
            return Step("activate", prepared)
        return Step("create_active") if keys else None
    step = None
    if prepared is not None and prepared.pk not in journal.created and now >= activate_at(active):
        step = Step("activate", prepared)
    else:
        expired = [a for a in journal.rows if a.status != "active" and a.not_after + grace <= now]
        if expired:
            step = Step("prune", expired[0])
        elif keys and prepared is None and now >= prepare_at(active):
            step = Step("prepare")
    return step


@dataclass(frozen=True)
class RotationState:
    """What a rotation left behind, for the operators' gauges (trustdomains.rotationhealth).

    `activation_points`: per kind, when the active authority's successor is due to take over
    (None: nothing active); `bundle_changed_at`: when the bundle last got a new sequence.
    """

    changes: list[JournalChange]
    activation_points: dict[str, dt.datetime | None]
    bundle_changed_at: dt.datetime | None


def rotate(*, now: dt.datetime | None = None) -> list[JournalChange]:
    """Bring the tenant's X.509 and JWT journals up to date at `now` (idempotent).

    Safe to run from any number of workers at once: each change is decided again under the
    trust domain's row lock, so racing runs make one authority, not two.
    """
    return rotate_with_state(now=now).changes


def rotate_with_state(*, now: dt.datetime | None = None) -> RotationState:
    """`rotate`, also saying where the journals stand afterwards (read without extra queries)."""
    tenant = current_tenant()
    now = now or timezone.now()
    trust_domain = TrustDomain.objects.first()
    if trust_domain is None:
        # signup has not provisioned it yet; the next run will see it
        return RotationState([], {}, None)
    grace = prune_grace()
    changes: list[JournalChange] = []
    points: dict[str, dt.datetime | None] = {}
    for keys in (False, True):
        for kind in (X509, JWT):
            made, journal = _apply(
                kind, trust_domain.pk, tenant=tenant, now=now, grace=grace, keys=keys
            )
            changes += made
            active = journal.with_status("active")
            points[kind.name] = activate_at(active) if active is not None else None
    if changes:  # publish_changes stamped the row
        trust_domain.refresh_from_db(fields=["bundle_sequence_changed_at"])
    changed_at = trust_domain.bundle_sequence_changed_at or trust_domain.created_at
    return RotationState(changes, points, changed_at)


def _apply(
    kind: AuthorityKind,
    trust_domain_pk: int,
    *,
    tenant: Tenant,
    now: dt.datetime,
    grace: dt.timedelta,
    keys: bool,
) -> tuple[list[JournalChange], Journal]:
    """The changes made, and the journal as it stands after them."""
    # Most runs find nothing to do: look first without the lock.
    snapshot = Journal(kind.live(trust_domain_pk))
    if next_step(snapshot, now=now, grace=grace, keys=keys) is None:
        return [], snapshot
    with transaction.atomic():
        trust_domain = TrustDomain.objects.select_for_update().get(pk=trust_domain_pk)
        journal = Journal(kind.live(trust_domain_pk))
        changes: list[JournalChange] = []
        for _ in range(MAX_STEPS):
            step = next_step(journal, now=now, grace=grace, keys=keys)
            if step is None:
                break
            changes.append(_execute(kind, trust_domain, journal, step, tenant=tenant, now=now))
        if changes:
            publish_changes(trust_domain, tenant=tenant, changes=changes, actor=SYSTEM_ACTOR)
    return changes, journal


def _execute(
    kind: AuthorityKind,
    trust_domain: TrustDomain,
    journal: Journal,
    step: Step,
    *,
    tenant: Tenant,
    now: dt.datetime,
) -> JournalChange:
    authority = step.authority
    if step.operation in ("activate", "create_active"):
        kind.demote_active(journal.rows)
    if step.operation == "activate" and authority is not None:
        authority.status = "active"
        authority.save(update_fields=["status"])
    elif step.operation in ("create_active", "prepare"):
        status = "active" if step.operation == "create_active" else "prepared"
        authority = kind.create(trust_domain, tenant=tenant, status=status, now=now)
        journal.rows.append(authority)
        journal.created.add(authority.pk)
    elif step.operation == "retire" and authority is not None:
        authority.status = "old"
        authority.save(update_fields=["status"])
    elif step.operation == "prune" and authority is not None:
        authority.pruned_at = now
        authority.save(update_fields=["pruned_at"])
        journal.rows.remove(authority)
    if authority is None:
        raise RuntimeError(f"journal step {step.operation} has no authority")
    log.info("%s: %s %s authority %s", trust_domain.name, step.operation, kind.name, authority.pk)
    return JournalChange(kind.name, step.operation, str(authority.pk), kind.target(authority))
