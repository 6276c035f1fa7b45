"""Plans the operator edits, and the invoices closing a month makes (one per tenant a month)."""

from __future__ import annotations

import uuid

from django.db import models


class Plan(models.Model):
    """A price list: per month, plus per-unit overage, in integer minor units of `currency`.

    A quota left empty is unlimited. SVIDs past `max_svids_per_month` are billed at
    `svid_overage_price` per `svid_overage_unit` SVIDs (rounded up), never refused to
    identities that exist already.
    """

    name = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    currency = models.CharField(max_length=3, default="EUR")
    price_per_month = models.PositiveBigIntegerField(default=0)
    max_agents = models.PositiveIntegerField(null=True, blank=True)
    max_entries = models.PositiveIntegerField(null=True, blank=True)
    max_svids_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    svid_overage_price = models.PositiveBigIntegerField(default=0)
    svid_overage_unit = models.PositiveIntegerField(default=1000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


class Invoice(models.Model):
    """One tenant's bill for one calendar month; closing the month again finds this one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    period = models.CharField(max_length=7)  # YYYY-MM
    plan = models.CharField(max_length=64, blank=True)
    currency = models.CharField(max_length=3)
    total = models.BigIntegerField(default=0)
    usage = models.JSONField(default=dict, blank=True)  # the month's figures it was made from
    issued_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period"], name="one_invoice_per_month")
        ]
        ordering = ["-period"]

    def __str__(self) -> str:
        return f"invoice {self.period} of {self.tenant_id}"


class InvoiceLine(models.Model):
    """The plan's monthly price, or one overage."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=32)  # plan | svid_overage
    description = models.CharField(max_length=300)
    quantity = models.BigIntegerField()
    unit_price = models.BigIntegerField()
    unit = models.PositiveIntegerField(default=1)  # unit_price is per this many
    amount = models.BigIntegerField()

    class Meta:
        ordering = ["position"]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount}"
