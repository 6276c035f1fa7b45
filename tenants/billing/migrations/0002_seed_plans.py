"""A free plan and a paid one to start from; operators edit them or add others."""

from django.db import migrations

PLANS = [
    {
        "name": "free",
        "display_name": "Free",
        "currency": "EUR",
        "price_per_month": 0,
        "max_agents": 5,
        "max_entries": 100,
        "max_svids_per_month": 100_000,
        "svid_overage_price": 0,
        "svid_overage_unit": 1000,
    },
    {
        "name": "team",
        "display_name": "Team",
        "currency": "EUR",
        "price_per_month": 49_00,
        "max_agents": 100,
        "max_entries": 10_000,
        "max_svids_per_month": 5_000_000,
        "svid_overage_price": 50,
        "svid_overage_unit": 1000,
    },
]


def seed(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for fields in PLANS:
        Plan.objects.get_or_create(name=fields["name"], defaults=fields)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
