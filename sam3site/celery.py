"""Celery configured from Django settings (``CELERY_`` namespace)."""

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3site.settings")

app = Celery("sam3site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _keep_loguru(**_kwargs: object) -> None:
    """Connecting this signal stops Celery from replacing the logging set up by Django's settings."""
