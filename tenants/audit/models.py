"""Audit events, each chain's head, and the signed checkpoints that pin a chain's length."""

from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """Who did what, when, from where, and how it ended: one link of its tenant's hash chain.

    `tenant` is NULL for the platform's own trail. The row outlives its tenant (no database
    constraint, nothing cascades): a deleted tenant's trail stays verifiable.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    tenant_slug = models.CharField(max_length=63, blank=True)
    sequence = models.BigIntegerField()
    at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=300)
    action = models.CharField(max_length=100, db_index=True)
    target = models.CharField(max_length=2100, blank=True)
    outcome = models.CharField(max_length=32, default="success")
    source = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=128, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["tenant", "id"], name="audit_event_tenant_id")]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "sequence"],
                name="audit_event_one_link_per_sequence",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%dT%H:%M:%S} {self.actor} {self.action} {self.outcome}"


class AuditChain(models.Model):
    """The head of one chain: its last sequence number and hash.

    Writers lock this row (INSERT ... ON CONFLICT DO UPDATE) in their own transaction, so
    the links of one chain are appended one transaction at a time and stay linear.
    """

    key = models.CharField(max_length=64, primary_key=True)  # tenant UUID hex, or "platform"
    tenant_id = models.UUIDField(null=True, blank=True)
    sequence = models.BigIntegerField(default=0)
    head_hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"{self.key} @{self.sequence}"


class AuditSigningKey(models.Model):
    """The platform key in a key manager that signs checkpoints (the private half stays there)."""

    id = models.BigAutoField(primary_key=True)
    key_manager = models.CharField(max_length=32)
    key_ref = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.key_manager}:{self.key_ref}"


class AuditCheckpoint(models.Model):
    """A signed statement "chain K had N events ending in hash H at time T".

    `kind` "checkpoint" is written periodically; "prune" records that retention dropped the
    chain's events up to and including `head_sequence`, so the trail may start after it.
    """

    class Kind(models.TextChoices):
        CHECKPOINT = "checkpoint"
        PRUNE = "prune"

    id = models.BigAutoField(primary_key=True)
    chain = models.CharField(max_length=64)
    tenant_id = models.UUIDField(null=True, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CHECKPOINT)
    head_sequence = models.BigIntegerField()
    head_hash = models.CharField(max_length=64)
    count = models.BigIntegerField()
    at = models.DateTimeField()
    key = models.ForeignKey(AuditSigningKey, on_delete=models.PROTECT, related_name="+")
    signature = models.BinaryField()

    class Meta:
        indexes = [models.Index(fields=["chain", "head_sequence"], name="audit_ckpt_chain_seq")]

    def __str__(self) -> str:
        return f"{self.kind} {self.chain} @{self.head_sequence}"
