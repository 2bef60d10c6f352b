"""The Celery app. Workers: ``celery -A config worker -Q default`` and ``-Q gpu --concurrency 1``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("arbiter")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Periodic work is scheduled in settings.CELERY_BEAT_SCHEDULE.
