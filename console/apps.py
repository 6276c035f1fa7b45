"""The console app: server-rendered pages over the other apps' services; nothing imports it."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Hallmark console"
