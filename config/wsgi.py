"""WSGI entry point (gunicorn config.wsgi:application). Never imports torch: models run on workers."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
