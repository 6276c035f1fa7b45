"""`hallmark audit verify [--tenant SLUG]`: verify chains against the platform's own database."""

from __future__ import annotations

import json
from typing import TextIO

from tenants.audit.chain import PLATFORM_CHAIN
from tenants.audit.verify import verify_chain


def verify_command(*, tenant_slug: str | None, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Verify one tenant's chain, or the platform's and every tenant's; 1 if any is invalid."""
    from tenants.models import Tenant

    if tenant_slug is not None:
        tenant = Tenant.objects.filter(slug=tenant_slug).first()
        if tenant is None:
            print(f"hallmark audit verify: no tenant {tenant_slug!r}", file=err)
            return 2
        chains = [(tenant.slug, tenant.pk)]
    else:
        chains = [(PLATFORM_CHAIN, None)] + [
            (slug, pk) for pk, slug in Tenant.objects.order_by("slug").values_list("pk", "slug")
        ]
    status = 0
    for name, tenant_id in chains:
        result = verify_chain(tenant_id)
        if as_json:
            print(json.dumps({"chain": name, **result.as_dict()}), file=out)
        elif result.valid:
            print(f"{name}: valid, {result.events} events, head {result.head_hash}", file=out)
        else:
            where = (
                f"event {result.first_invalid_id}"
                if result.first_invalid_id is not None
                else "missing events"
            )
            print(
                f"{name}: INVALID at sequence {result.first_invalid_sequence} ({where}): "
                f"{result.reason}: {result.detail}",
                file=out,
            )
        if not result.valid:
            status = 1
    return status
