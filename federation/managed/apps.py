"""App config of managed federation: it follows bundle changes to push them to peers."""

from django.apps import AppConfig


class ManagedFederationConfig(AppConfig):
    name = "federation.managed"
    label = "federation_managed"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Managed federation"

    def ready(self) -> None:
        from federation.managed import push

        push.connect()
