"""Push a tenant's bundle change to the tenants it federates with (managed), no polling.

A tenant's bundle change is published as its "bundle" event; here it becomes a "federation"
event of every managed peer, in the same transaction, so the peers' agents (WatchUpdates on
any agent-API replica) resync and read the new bundle at once.
"""

from __future__ import annotations

import uuid
from typing import Any

from tenants.events import change_published, publish_change


def peers_of(tenant_id: uuid.UUID | str) -> list[uuid.UUID]:
    """Tenants with an approved managed federation with this one."""
    from federation.managed.models import FederationRequest
    from tenants.scoping import public_schema

    approved = FederationRequest.Status.APPROVED
    with public_schema():
        sent = FederationRequest.objects.filter(from_tenant_id=tenant_id, status=approved)
        received = FederationRequest.objects.filter(to_tenant_id=tenant_id, status=approved)
        return list(sent.values_list("to_tenant_id", flat=True)) + list(
            received.values_list("from_tenant_id", flat=True)
        )


def _bundle_changed(sender: Any, *, tenant_id: uuid.UUID | str, kind: str, **_: Any) -> None:
    if kind != "bundle":
        return
    for peer in peers_of(tenant_id):
        publish_change(tenant_id=peer, kind="federation")


def connect() -> None:
    change_published.connect(_bundle_changed, dispatch_uid="federation.managed.push")
