"""The Celery app. Workers: ``celery -A config worker -Q default`` and ``-Q gpu --concurrency 1``."""

import os

from celery import Celery

from config.observability import connect_celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("arbiter")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Task messages carry the id of the request that sent them; worker log lines carry both ids.
connect_celery_signals()

# Periodic work is scheduled in settings.CELERY_BEAT_SCHEDULE.
