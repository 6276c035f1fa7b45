"""Django app configuration for trustdomains."""

from django.apps import AppConfig


class TrustDomainsConfig(AppConfig):
    """The tenant-schema app holding each tenant's trust domain and its authorities."""

    name = "trustdomains"
    verbose_name = "Trust domains"
    default_auto_field = "django.db.models.BigAutoField"
