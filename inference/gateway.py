"""The one way from web processes to the model: image jobs and session commands, typed.

Which gateway runs is a setting, the way ``CACHES`` picks a cache backend:
``INFERENCE_GATEWAY = "inference.gateway.CeleryGateway"`` with REDIS_URL (model workers in their
own processes, reached through Celery queues and Redis replies), or
``"inference.inprocess.InProcessGateway"`` on the embedded default (the model runs in this
process). Only this module and the settings know there are two modes.

Web-safe: this module never imports model code; the in-process gateway is imported by name only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from inference import dispatch, health, live_frames, registry
from inference.jobs import ImageJob
from inference.live_frames import LiveFrame
from inference.messages import ImageReply, SessionMessage, SessionRecovering
from sam3site.errors import ModelUnavailable, NotFound

SESSION_COMMAND_TASK = "sessions.command"  # the Celery task name (inference.video_sessions.tasks)
COMMAND_TIMEOUT_SECONDS = 600  # opening and prompting a long video can take a while on a CPU
RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True)
class SessionTarget:
    """Where a session's live state is: the worker holding it, as the session record says."""

    session_id: str
    worker: str
    queue: str
    recovering: bool = False


class Gateway(Protocol):
    def start(self) -> None:
        """Called once in each serving web process (the in-process gateway loads the model here)."""
        ...

    async def run_image_job(self, job: ImageJob) -> ImageReply: ...

    async def session_worker(self, load: dict[str, int]) -> tuple[str, str]:
        """The worker (name, queue) a new session goes to; ``load``: open sessions per worker."""
        ...

    async def session_command(self, target: SessionTarget, message: SessionMessage, *, timeout: float) -> dict[str, Any]: ...

    async def live_push(self, target: SessionTarget, frame: LiveFrame) -> int | None:
        """Leave ``frame`` for the live session's worker (latest-wins); the seq of the untaken frame it replaced."""
        ...

    def model_health(self) -> tuple[bool, dict]: ...


class CeleryGateway:
    """Model workers in their own processes (manage.py run_workers): Celery queues there, Redis replies back."""

    def start(self) -> None:
        pass

    async def run_image_job(self, job: ImageJob) -> ImageReply:
        return await dispatch.run_on_worker(job)

    async def session_worker(self, load: dict[str, int]) -> tuple[str, str]:
        workers = [w for w in await dispatch.live_workers() if w.ready and registry.serves_video(w.device)]
        if not workers:
            raise ModelUnavailable("No model worker serving video is ready.")
        chosen = min(workers, key=lambda w: (load.get(w.name, 0), w.name))  # spread sessions over the workers
        return chosen.name, chosen.queue

    async def session_command(self, target: SessionTarget, message: SessionMessage, *, timeout: float) -> dict[str, Any]:
        alive = {w.name for w in await dispatch.live_workers() if w.alive}
        if target.worker not in alive or target.recovering:
            raise SessionRecovering(retry_after=RETRY_AFTER_SECONDS)
        try:
            return await dispatch.call_worker(
                SESSION_COMMAND_TASK, queue=target.queue, args=(message.to_message(),), deadline=time.time() + timeout
            )
        except NotFound as error:
            if error.code == "session_not_loaded":
                raise SessionRecovering(retry_after=RETRY_AFTER_SECONDS) from None
            raise

    async def live_push(self, target: SessionTarget, frame: LiveFrame) -> int | None:
        return await live_frames.push_to_redis(target.session_id, target.queue, frame)

    def model_health(self) -> tuple[bool, dict]:
        return health.check_workers()


_gateway: Gateway | None = None
_lock = threading.Lock()


def gateway() -> Gateway:
    """This process's gateway, built on first use from ``settings.INFERENCE_GATEWAY``."""
    global _gateway
    with _lock:
        if _gateway is None:
            _gateway = import_string(settings.INFERENCE_GATEWAY)()
        return _gateway

