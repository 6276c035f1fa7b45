"""Public-schema usage tables: daily counters, hourly gauge samples, applied roll-up batches."""

from __future__ import annotations

from django.db import models


class DailyUsage(models.Model):
    """One counter of one tenant on one UTC day (SVIDs issued, API calls)."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    date = models.DateField()
    metric = models.CharField(max_length=32)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "date", "metric"], name="one_counter_per_tenant_day_metric"
            )
        ]
        indexes = [models.Index(fields=["date"])]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.date} {self.metric}={self.value}"


class GaugeSample(models.Model):
    """What a tenant held during one UTC hour: the most agents, and entries and relationships."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    agents_active = models.IntegerField(default=0)
    entries = models.IntegerField(default=0)
    federation_relationships = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "hour"], name="one_sample_per_tenant_hour")
        ]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.hour:%Y-%m-%dT%H}"


class RollupBatch(models.Model):
    """A claimed batch of Redis counters, stored once: a replayed batch adds nothing."""

    batch_id = models.CharField(max_length=64, primary_key=True)
    applied_at = models.DateTimeField(auto_now_add=True, db_index=True)
    fields = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"roll-up {self.batch_id}"
