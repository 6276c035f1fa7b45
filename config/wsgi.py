"""WSGI entry point for gunicorn: `gunicorn config.wsgi`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_wsgi_application()

# Signups from a client its rate limit already refused are answered before Django
# (tenants.edgerefusals); imported once Django is set up.
from tenants.edgerefusals import EdgeRefusals  # noqa: E402

application = EdgeRefusals(django_application)
