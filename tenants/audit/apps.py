"""Django app configuration for the audit trail (public schema)."""

from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit trail: events, chain heads, signed checkpoints."""

    name = "tenants.audit"
    label = "audit"
    default_auto_field = "django.db.models.BigAutoField"
