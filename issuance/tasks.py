"""Periodic entry upkeep: expiry becomes a change agents are told about; old tombstones go."""

from __future__ import annotations

from celery import shared_task

from issuance.services.entries import expire_entries
from issuance.services.sync import prune_tombstones
from tenants.scoping import all_tenant_ids, tenant_for_task, tenant_schema

# Entries are also expired on each agent sync; this bounds how late an idle agent hears of it.
UPKEEP_SECONDS = 30.0
BEAT_SCHEDULE = {
    "issuance-entry-upkeep": {
        "task": "issuance.tasks.entry_upkeep_all_tenants",
        "schedule": UPKEEP_SECONDS,
    },
}


@shared_task(name="issuance.tasks.entry_upkeep_all_tenants", ignore_result=True)
def entry_upkeep_all_tenants() -> None:
    """Queue `entry_upkeep` for every tenant."""
    tenant_ids = all_tenant_ids()
    for tenant_id in tenant_ids:
        entry_upkeep.delay(str(tenant_id))


@shared_task(name="issuance.tasks.entry_upkeep", ignore_result=True)
def entry_upkeep(tenant_id: str) -> dict[str, int]:
    """Expire what is past `expires_at` and prune tombstones past the horizon (idempotent)."""
    tenant = tenant_for_task(tenant_id, "entry_upkeep")
    if tenant is None:  # deleted since the sweep queued this
        return {"expired": 0, "pruned": 0}
    with tenant_schema(tenant):
        return {
            "expired": expire_entries(tenant=tenant),
            "pruned": prune_tombstones(),
        }
