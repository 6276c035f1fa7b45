"""Django app configuration for issuance."""

from django.apps import AppConfig


class IssuanceConfig(AppConfig):
    """Registration entries, join tokens, agents and SVID minting."""

    name = "issuance"
    default_auto_field = "django.db.models.BigAutoField"
