"""Hallmark's Django project: settings, URLs, the Celery app, and the `hallmark` CLI."""
