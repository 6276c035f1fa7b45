"""Tenant-schema models: registration entries, join tokens and attested agents."""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models


class Entry(models.Model):
    """A registration entry: workloads matching `selectors` under `parent_id` get `spiffe_id`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    spiffe_id = models.CharField(max_length=2048, db_index=True)
    parent_id = models.CharField(max_length=2048, db_index=True)
    # Sorted, de-duplicated "type:value" strings, so equal sets compare equal in the database.
    selectors = models.JSONField(default=list)
    x509_svid_ttl = models.PositiveIntegerField()
    jwt_svid_ttl = models.PositiveIntegerField()
    dns_names = models.JSONField(default=list)
    hint = models.CharField(max_length=1024, blank=True, default="")
    federates_with = models.JSONField(default=list)
    admin = models.BooleanField(default=False)
    downstream = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    # The tenant's entry revision (RevisionCounter) at this entry's last change as agents see
    # it: its own fields, or the set of agents it is authorised for (`roots`).
    revision = models.BigIntegerField(unique=True)
    # Every SPIFFE ID within MAX_PARENT_DEPTH levels above the entry (its parent_id, the
    # parent_id of live entries named by it, ...): an agent whose ID or node alias is among
    # them is authorised for the entry. Empty once the entry has expired.
    roots = ArrayField(models.CharField(max_length=2048), default=list, blank=True)
    # Set when expiry was noticed (its revision bumped, its agents told); cleared on renewal.
    expired = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["spiffe_id", "parent_id", "selectors"], name="issuance_entry_unique"
            )
        ]
        indexes = [
            GinIndex(fields=["roots"], name="issuance_entry_roots"),
            models.Index(
                fields=["expires_at"],
                condition=models.Q(expired=False, expires_at__isnull=False),
                name="issuance_entry_expiring",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.spiffe_id} (parent {self.parent_id})"


class JoinToken(models.Model):
    """A single-use node attestation secret; only its SHA-256 is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    token_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    # Optional node alias registered for the agent that redeems the token.
    spiffe_id = models.CharField(max_length=2048, null=True, blank=True)  # noqa: DJ001
    used_at = models.DateTimeField(null=True, blank=True)
    agent = models.ForeignKey(
        "issuance.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"join token {self.id}"


class Agent(models.Model):
    """A node agent that attested to this tenant's trust domain."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    spiffe_id = models.CharField(max_length=2048, unique=True)
    attestation_type = models.CharField(max_length=64)
    # Hex serial of the agent's current SVID, and of a renewed one not yet used.
    serial = models.CharField(max_length=64)
    new_serial = models.CharField(max_length=64, blank=True, default="")
    expires_at = models.DateTimeField()
    banned = models.BooleanField(default=False)
    node_aliases = models.JSONField(default=list)
    # Node selectors found by the attestor (x509pop:subject:cn:..., k8s_psat:cluster:...).
    selectors = models.JSONField(default=list)
    # Whether the attestor lets the agent attest again under its ID (not join_token).
    can_reattest = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    # The entry revision of the last complete ("full") sync answered to this agent; 0 before
    # its first. Lets a paged full sync continue below the tombstone horizon.
    full_sync_revision = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.spiffe_id


class RevisionCounter(models.Model):
    """The tenant's entry revision: one row, locked by every entry write until it commits.

    Holding the row lock from the first revision handed out to the commit makes revision
    order the order in which changes become visible, so an agent that has seen revision N
    has seen every change numbered N or lower.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    head = models.BigIntegerField(default=0)
    # Tombstones up to this revision were pruned: agents behind it need a full sync.
    horizon = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"entries at revision {self.head}"


class EntryTombstone(models.Model):
    """An entry left the agents named by `roots` (deleted, re-parented, expired) at `revision`."""

    id = models.BigAutoField(primary_key=True)
    entry_id = models.UUIDField(db_index=True)
    parent_id = models.CharField(max_length=2048)
    spiffe_id = models.CharField(max_length=2048)
    # The roots the entry lost (see Entry.roots).
    roots = ArrayField(models.CharField(max_length=2048), default=list)
    revision = models.BigIntegerField(unique=True)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["revision"]
        indexes = [GinIndex(fields=["roots"], name="issuance_tombstone_roots")]

    def __str__(self) -> str:
        return f"entry {self.entry_id} removed at revision {self.revision}"


class NodeAttestor(models.Model):
    """A node attestor the tenant turned on, with its settings (SPIRE's server plugin data)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=32, unique=True)
    config = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"node attestor {self.type}"


class AttestationProof(models.Model):
    """A single-use proof (token, signed document) that attested, kept until it expires."""

    proof_id = models.CharField(max_length=128, primary_key=True)
    agent_spiffe_id = models.CharField(max_length=2048)
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"attestation proof {self.proof_id}"
