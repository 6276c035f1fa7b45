# The audit trail moved to its own app (tenants.audit); its rows were copied, and chained,
# by audit 0002, so the old table goes.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0003_people'),
        ('audit', '0002_copy_from_tenants'),
    ]

    operations = [
        migrations.DeleteModel(
            name='AuditEvent',
        ),
    ]
