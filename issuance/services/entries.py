"""Registration entries: create, change and delete them, and what each agent may mint."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import F, Func, Q
from django.utils import timezone

from hallmark.spiffeid import TrustDomain
from issuance.errors import EntryExists, InvalidEntry
from issuance.models import Agent, Entry, EntryTombstone
from issuance.services import validation
from issuance.services.revisions import RevisionLock, locked_revisions
from issuance.services.roots import refresh_roots, roots_for
from tenants.billing import services as billing
from tenants.events import publish_change
from tenants.services import record_audit
from trustdomains import services as trustdomain_services

if TYPE_CHECKING:
    from tenants.models import Tenant

ENTRY_FIELDS = (
    "spiffe_id",
    "parent_id",
    "selectors",
    "x509_svid_ttl",
    "jwt_svid_ttl",
    "dns_names",
    "hint",
    "federates_with",
    "admin",
    "downstream",
    "expires_at",
)
# Changing these moves the entry in the authorisation graph (see issuance.services.roots).
GRAPH_FIELDS = ("spiffe_id", "parent_id", "expired")


def tenant_trust_domain() -> TrustDomain:
    """The trust domain of the tenant whose schema the connection is in."""
    return TrustDomain(trustdomain_services.get_trust_domain().name)


def clean_entry_fields(fields: Mapping[str, Any], trust_domain: TrustDomain) -> dict[str, Any]:
    """Every entry field checked and normalised; raises a HallmarkError with a stable code."""
    unknown = set(fields) - set(ENTRY_FIELDS)
    if unknown:
        raise InvalidEntry(f"unknown entry fields: {', '.join(sorted(unknown))}")
    return {
        "spiffe_id": str(
            validation.workload_spiffe_id(fields.get("spiffe_id"), trust_domain, field="spiffe_id")
        ),
        "parent_id": str(
            validation.spiffe_id_in(fields.get("parent_id"), trust_domain, field="parent_id")
        ),
        "selectors": validation.selectors(fields.get("selectors")),
        "x509_svid_ttl": validation.ttl(
            fields.get("x509_svid_ttl"),
            field="x509_svid_ttl",
            default=validation.default_x509_svid_ttl(),
            maximum=validation.max_x509_svid_ttl(),
        ),
        "jwt_svid_ttl": validation.ttl(
            fields.get("jwt_svid_ttl"),
            field="jwt_svid_ttl",
            default=validation.default_jwt_svid_ttl(),
            maximum=validation.MAX_JWT_SVID_TTL_SECONDS,
        ),
        "dns_names": validation.dns_names(fields.get("dns_names"), trust_domain),
        "hint": validation.hint(fields.get("hint")),
        "federates_with": validation.federates_with(fields.get("federates_with"), trust_domain),
        "admin": validation.flag(fields.get("admin"), field="admin"),
        "downstream": validation.flag(fields.get("downstream"), field="downstream"),
        "expires_at": validation.future_time(fields.get("expires_at"), field="expires_at"),
    }


def _refuse_similar(cleaned: Mapping[str, Any], *, exclude: uuid.UUID | None = None) -> None:
    similar = Entry.objects.filter(
        spiffe_id=cleaned["spiffe_id"],
        parent_id=cleaned["parent_id"],
        selectors=cleaned["selectors"],
    )
    if exclude is not None:
        similar = similar.exclude(pk=exclude)
    if similar.exists():
        raise EntryExists("an entry with this spiffe_id, parent_id and selectors already exists")


def _audit_detail(entry: Entry) -> dict[str, Any]:
    return {
        "spiffe_id": entry.spiffe_id,
        "parent_id": entry.parent_id,
        "selectors": entry.selectors,
        "revision": entry.revision,
    }


def _entry_exists() -> EntryExists:
    return EntryExists("an entry with this spiffe_id, parent_id and selectors already exists")


# Refusals that are attempts on someone else's names: the tenant's trail records them.
# permission_denied: an item outside the caller's SPIFFE-ID prefix (tenants.roles).
AUDITED_REFUSALS = frozenset({"dns_name_not_allowed", "permission_denied"})


def _audit_refusal(
    exc: InvalidEntry, *, tenant: Tenant, actor: str, action: str, target: str, source: str
) -> None:
    if exc.code not in AUDITED_REFUSALS:
        return
    with transaction.atomic():
        record_audit(
            tenant=tenant,
            actor=actor,
            action=action,
            target=target,
            outcome="denied",
            source=source,
            detail={"code": exc.code, "detail": exc.detail[:500]},
        )


def create_entry(
    *, tenant: Tenant, actor: str, fields: Mapping[str, Any], source: str = ""
) -> Entry:
    """Register a workload; 409 `entry_exists` when a similar entry is already there."""
    try:
        cleaned = clean_entry_fields(fields, tenant_trust_domain())
    except InvalidEntry as exc:
        _audit_refusal(
            exc, tenant=tenant, actor=actor, action="entry.create", target="", source=source
        )
        raise
    try:
        with transaction.atomic(), locked_revisions() as revisions:
            _refuse_similar(cleaned)
            billing.check_entries(tenant, entries=Entry.objects.all(), adding=1)
            # Written with its roots: its parent's ancestry, the same read before its row exists
            # as after (the row only adds the edge back to its parent, where the walk starts),
            # so no read-back and no second write of the new row.
            entry = Entry.objects.create(
                **cleaned, revision=revisions.next(), roots=roots_for(cleaned["parent_id"])
            )
            # Entries already parented by its SPIFFE ID (and below) gain roots through it.
            refresh_roots(
                revisions, nodes=[entry.spiffe_id], bumped=frozenset([entry.id]), at=timezone.now()
            )
            record_audit(
                tenant=tenant,
                actor=actor,
                action="entry.create",
                target=str(entry.id),
                source=source,
                detail=_audit_detail(entry),
            )
            publish_change(tenant_id=tenant.id, kind="entries", revision=revisions.head)
    except IntegrityError:
        raise _entry_exists() from None
    except billing.QuotaExceeded as exc:
        billing.audit_quota_refusal(
            exc, tenant=tenant, actor=actor, action="entry.create", source=source
        )
        raise
    return entry


def update_entry(
    *,
    tenant: Tenant,
    actor: str,
    entry_id: uuid.UUID,
    changes: Mapping[str, Any],
    source: str = "",
) -> Entry:
    """Apply a partial change; every field is re-checked and the entry gets a new revision."""
    trust_domain = tenant_trust_domain()
    try:
        with transaction.atomic(), locked_revisions() as revisions:
            entry = Entry.objects.select_for_update().get(pk=entry_id)
            current = {name: getattr(entry, name) for name in ENTRY_FIELDS}
            if "expires_at" not in changes:
                # An unchanged expiry may be in the past by now; it is not re-checked.
                current.pop("expires_at")
            cleaned = clean_entry_fields({**current, **changes}, trust_domain)
            if "expires_at" not in changes:
                cleaned["expires_at"] = entry.expires_at
            else:
                cleaned["expired"] = False  # a new expiry is in the future: live again
            _refuse_similar(cleaned, exclude=entry.pk)
            before = {name: getattr(entry, name) for name in GRAPH_FIELDS}
            for name, value in cleaned.items():
                setattr(entry, name, value)
            entry.revision = revisions.next()
            entry.save()
            if any(getattr(entry, name) != before[name] for name in GRAPH_FIELDS):
                refresh_roots(
                    revisions,
                    nodes={before["spiffe_id"], entry.spiffe_id},
                    entry_ids=[entry.id],
                    bumped=frozenset([entry.id]),
                    previous_parents={entry.id: before["parent_id"]},
                    at=timezone.now(),
                )
                entry.refresh_from_db()
            record_audit(
                tenant=tenant,
                actor=actor,
                action="entry.update",
                target=str(entry.id),
                source=source,
                detail={**_audit_detail(entry), "changed": sorted(changes)},
            )
            publish_change(tenant_id=tenant.id, kind="entries", revision=revisions.head)
    except IntegrityError:
        raise _entry_exists() from None
    except InvalidEntry as exc:  # the change's transaction is rolled back by now
        _audit_refusal(
            exc,
            tenant=tenant,
            actor=actor,
            action="entry.update",
            target=str(entry_id),
            source=source,
        )
        raise
    return entry


def delete_entry(*, tenant: Tenant, actor: str, entry_id: uuid.UUID, source: str = "") -> None:
    """Delete the entry; agents that held it (or entries below it) are told they are gone."""
    with transaction.atomic(), locked_revisions() as revisions:
        entry = Entry.objects.select_for_update().get(pk=entry_id)
        detail = _audit_detail(entry)
        _remove(entries=[entry], revisions=revisions)
        entry.delete()
        refresh_roots(revisions, nodes=[entry.spiffe_id], at=timezone.now())
        record_audit(
            tenant=tenant,
            actor=actor,
            action="entry.delete",
            target=str(entry_id),
            source=source,
            detail=detail,
        )
        publish_change(tenant_id=tenant.id, kind="entries", revision=revisions.head)


def _remove(*, entries: Iterable[Entry], revisions: RevisionLock) -> None:
    """Tombstones for entries leaving every agent they were authorised for."""
    now = timezone.now()
    EntryTombstone.objects.bulk_create(
        [
            EntryTombstone(
                entry_id=entry.id,
                parent_id=entry.parent_id,
                spiffe_id=entry.spiffe_id,
                roots=entry.roots,
                revision=revisions.next(),
                at=now,
            )
            for entry in entries
            if entry.roots
        ]
    )


def expire_entries(*, tenant: Tenant, limit: int = 10_000) -> int:
    """Take entries past `expires_at` away from their agents; returns how many expired.

    Expiry changes no row by itself; this turns it into a change agents sync (a tombstone,
    a new revision, the roots of entries below recomputed). Cheap when nothing expired.
    """
    now = timezone.now()
    expiring = Entry.objects.filter(expired=False, expires_at__isnull=False, expires_at__lte=now)
    if not expiring.exists():
        return 0
    with transaction.atomic(), locked_revisions() as revisions:
        entries = list(expiring.select_for_update().order_by("expires_at")[:limit])
        if not entries:
            return 0
        _remove(entries=entries, revisions=revisions)
        for entry in entries:
            entry.expired = True
            entry.roots = []
            entry.revision = revisions.next()
        Entry.objects.bulk_update(entries, ["expired", "roots", "revision"], batch_size=1000)
        refresh_roots(revisions, nodes={e.spiffe_id for e in entries}, at=now)
        record_audit(
            tenant=tenant,
            actor="system",
            action="entry.expire",
            target=str(entries[0].id) if len(entries) == 1 else "",
            detail={"entries": len(entries), "entry_ids": [str(e.id) for e in entries[:50]]},
        )
        publish_change(tenant_id=tenant.id, kind="entries", revision=revisions.head)
    return len(entries)


def principal_ids(agent: Agent) -> list[str]:
    """The SPIFFE IDs an agent's entries hang from: its own and its node aliases."""
    return sorted({agent.spiffe_id, *agent.node_aliases})


def _authorized(agent: Agent) -> Any:
    """Entries the agent may mint SVIDs for: parented by its ID or a node alias, recursively
    (entry `roots`); expired entries are left out."""
    live = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    return Entry.objects.filter(live, roots__overlap=principal_ids(agent), expired=False)


def normalized_entry_id(text: str) -> str:
    """The canonical form of an entry id as a caller wrote it ("" when it is no UUID)."""
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError, AttributeError):
        return ""


def authorized_entries_by_id(
    agent: Agent, entry_ids: Iterable[str], *, only: Sequence[str] = ()
) -> dict[str, Entry]:
    """Those of `entry_ids` the agent is authorised for now, by canonical id.

    `only` names the fields the caller reads (minting reads four of them, for hundreds of
    entries a batch); the others are left unloaded.
    """
    wanted = {normalized_entry_id(text) for text in entry_ids} - {""}
    if not wanted:
        return {}
    found = _authorized(agent).filter(id__in=wanted)
    if only:
        found = found.only("id", *only)
    return {str(e.id): e for e in found}


def federated_trust_domains(agent: Agent) -> list[str]:
    """Names in `federates_with` of the agent's authorised entries."""
    names = (
        _authorized(agent)
        .exclude(federates_with=[])
        .annotate(name=Func(F("federates_with"), function="jsonb_array_elements_text"))
        .values_list("name", flat=True)
        .distinct()
    )
    return sorted(names)
