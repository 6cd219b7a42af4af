from pathlib import Path

from django.apps import AppConfig
from django.conf import settings
from loguru import logger


class Sam3SiteConfig(AppConfig):
    name = "sam3site"
    verbose_name = "SAM3 server"

    def ready(self) -> None:
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # whitenoise expects it
        for warning in settings.STATIC_API_KEY_WARNINGS:
            logger.warning("INSECURE: {}", warning)
