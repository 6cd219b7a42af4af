import os

from django.apps import AppConfig
from django.conf import settings


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "SAM3 model workers"

    def ready(self) -> None:
        from inference import tasks  # noqa: F401 - registers the Celery tasks and worker signals
        from inference.health import check_model
        from sam3site.health import READINESS_CHECKS
        from sam3site.management.commands.serve import SERVING_ENV

        READINESS_CHECKS["model"] = check_model
        if settings.EMBEDDED and os.environ.get(SERVING_ENV):
            from inference.runtime_process import embedded_runtime

            embedded_runtime()  # loads in the background; /readyz says "loading" meanwhile
