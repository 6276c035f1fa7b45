"""The metering app (public schema)."""

from django.apps import AppConfig


class MeteringConfig(AppConfig):
    name = "tenants.metering"
    label = "metering"
    default_auto_field = "django.db.models.BigAutoField"
