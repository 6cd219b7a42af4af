from django.apps import AppConfig
from django.conf import settings


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "SAM3 model workers"

    def ready(self) -> None:
        from inference import tasks  # noqa: F401 - registers the Celery tasks and worker signals
        from inference.gateway import gateway
        from inference.video_sessions import tasks as session_tasks  # noqa: F401 - connected after inference.tasks
        from sam3site.health import READINESS_CHECKS

        READINESS_CHECKS["model"] = lambda: gateway().model_health()
        if settings.SERVING:
            gateway().start()  # in-process: the model loads in the background; /readyz says "loading" meanwhile
