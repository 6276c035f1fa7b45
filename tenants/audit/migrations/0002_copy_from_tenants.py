"""Copy the rows of tenants.AuditEvent into the audit app, chaining each tenant's in id order."""

from django.db import migrations


def copy_and_chain(apps, schema_editor):
    from tenants.audit.chain import GENESIS_HASH, chain_key, link_hash, normalise_detail

    Old = apps.get_model("tenants", "AuditEvent")
    New = apps.get_model("audit", "AuditEvent")
    Chain = apps.get_model("audit", "AuditChain")
    heads: dict[str, tuple[object, int, str]] = {}
    batch = []
    for old in Old.objects.order_by("id").iterator(chunk_size=2000):
        key = chain_key(old.tenant_id)
        _, sequence, prev_hash = heads.get(key, (old.tenant_id, 0, GENESIS_HASH))
        fields = {
            "tenant_slug": old.tenant_slug,
            "sequence": sequence + 1,
            "at": old.at,
            "actor": old.actor,
            "action": old.action,
            "target": old.target,
            "outcome": old.outcome,
            "source": old.source,
            "request_id": "",
            "detail": normalise_detail(old.detail or {}),
            "prev_hash": prev_hash,
        }
        digest = link_hash(tenant_id=old.tenant_id, **fields)
        batch.append(New(id=old.id, tenant_id=old.tenant_id, hash=digest, **fields))
        heads[key] = (old.tenant_id, sequence + 1, digest)
        if len(batch) >= 2000:
            New.objects.bulk_create(batch)
            batch = []
    New.objects.bulk_create(batch)
    Chain.objects.bulk_create(
        Chain(key=key, tenant_id=tenant_id, sequence=sequence, head_hash=head)
        for key, (tenant_id, sequence, head) in heads.items()
    )
    table = New._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        ("tenants", "0002_tenant_migrated_to"),
    ]

    operations = [migrations.RunPython(copy_and_chain, migrations.RunPython.noop)]
