"""App config of the refresh index: it follows every relationship's save and delete."""

from django.apps import AppConfig


class RefreshScheduleConfig(AppConfig):
    name = "federation.schedule"
    label = "federation_schedule"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Federation refresh schedule"

    def ready(self) -> None:
        from federation.schedule import index

        index.connect()
