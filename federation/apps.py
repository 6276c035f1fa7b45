"""Django app configuration for federation."""

from django.apps import AppConfig


class FederationConfig(AppConfig):
    """Federation: a stub until its issue lands."""

    name = "federation"
    default_auto_field = "django.db.models.BigAutoField"
