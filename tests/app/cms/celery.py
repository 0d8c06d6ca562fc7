"""Celery app of the test application (``celery -A cms worker -Q short_tasks``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cms.settings")

app = Celery("cms")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Read while the cms package is imported, as upstream's cms/celery.py reads its
# CELERY_BEAT_SCHEDULE: the settings module must load without importing cms first.
BEAT_SCHEDULE = app.conf.beat_schedule
