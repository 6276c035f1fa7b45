"""Django app configuration for tenants."""

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    """The public-schema app."""

    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"
