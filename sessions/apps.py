import os

from django.apps import AppConfig
from django.conf import settings


class VideoSessionsConfig(AppConfig):
    name = "sessions"
    label = "video_sessions"  # "sessions" is django.contrib.sessions' label
    verbose_name = "Video sessions"

    def ready(self) -> None:
        from sessions import tasks  # noqa: F401 - registers the Celery task and worker signals
        from sam3site.management.commands.serve import SERVING_ENV

        if settings.EMBEDDED and os.environ.get(SERVING_ENV):
            from inference.runtime_process import embedded_runtime
            from sessions.worker import start_manager

            start_manager(embedded_runtime())
