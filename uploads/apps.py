from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class UploadsConfig(AppConfig):
    name = "uploads"
    verbose_name = "Uploaded images and videos"

    def ready(self) -> None:
        for directory in (settings.FILE_UPLOAD_TEMP_DIR, settings.OUTPUT_DIR):
            Path(directory).mkdir(parents=True, exist_ok=True)
