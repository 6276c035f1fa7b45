"""Backfill the public refresh index (federation.schedule) with this schema's relationships.

Runs in each tenant schema (and the template, which holds none), after the index's table
exists in the public schema: every relationship the sweep fetches gets its row, with the
next_refresh_at it has now. Later writes keep the row in step (federation.schedule.index).
"""

from django.db import migrations

FETCHED = ("https_web", "https_spiffe")


def backfill(apps, schema_editor):  # type: ignore[no-untyped-def]
    Relationship = apps.get_model("federation", "FederationRelationship")
    rows = list(
        Relationship.objects.filter(bundle_endpoint_profile__in=FETCHED)
        .exclude(bundle_endpoint_url="")
        .values_list("id", "trust_domain", "next_refresh_at")
    )
    if not rows:
        return
    Tenant = apps.get_model("tenants", "Tenant")
    tenant = Tenant.objects.filter(schema_name=schema_editor.connection.schema_name).first()
    if tenant is None:
        return
    ScheduledRefresh = apps.get_model("federation_schedule", "ScheduledRefresh")
    ScheduledRefresh.objects.bulk_create(
        [
            ScheduledRefresh(
                relationship_id=pk, tenant_id=tenant.pk, trust_domain=td, next_refresh_at=due
            )
            for pk, td, due in rows
        ],
        update_conflicts=True,
        unique_fields=["relationship_id"],
        update_fields=["tenant", "trust_domain", "next_refresh_at"],
    )


def unfill(apps, schema_editor):  # type: ignore[no-untyped-def]
    Relationship = apps.get_model("federation", "FederationRelationship")
    ScheduledRefresh = apps.get_model("federation_schedule", "ScheduledRefresh")
    ids = list(Relationship.objects.values_list("id", flat=True))
    ScheduledRefresh.objects.filter(relationship_id__in=ids).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("federation", "0002_refresh"),
        ("federation_schedule", "0001_initial"),
    ]

    operations = [migrations.RunPython(backfill, unfill)]
