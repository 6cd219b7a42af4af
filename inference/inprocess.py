"""The embedded default's gateway: the model, its scheduler and the video sessions run inside the
serving web process (no Redis, no separate workers). Worker side: web code reaches this module only
by name, through ``settings.INFERENCE_GATEWAY``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.conf import settings

from inference.gateway import RETRY_AFTER_SECONDS, SessionTarget
from inference.jobs import ImageJob
from inference.live_frames import LiveFrame
from inference.messages import ImageReply, SessionMessage, encode_image_result
from inference.runtime_process import ModelRuntime, current_runtime, start_runtime
from inference.video_sessions.manager import require_manager, start_manager
from inference.video_sessions.streaming import MemorySlots
from sam3site.errors import DeadlineExceeded, ModelUnavailable, Overloaded


class InProcessGateway:
    def __init__(self) -> None:
        self._inflight = 0

    def _runtime(self) -> ModelRuntime:
        return current_runtime() or start_runtime(device=settings.CONFIG.image_model_device, queue=None, tiny_fallback=True)

    def start(self) -> None:
        start_manager(self._runtime())  # the model loads in the background; /readyz says "loading" meanwhile

    def _require_ready(self) -> ModelRuntime:
        runtime = self._runtime()
        if not runtime.host.ready:
            raise ModelUnavailable(
                f"The model is {runtime.host.state}" + (f": {runtime.host.reason}" if runtime.host.reason else "."),
                retry_after=RETRY_AFTER_SECONDS if runtime.host.state == "loading" else None,
            )
        return runtime

    async def run_image_job(self, job: ImageJob) -> ImageReply:
        runtime = self._require_ready()
        if self._inflight >= settings.CONFIG.inference_queue_limit:
            raise Overloaded(retry_after=RETRY_AFTER_SECONDS)
        self._inflight += 1
        try:
            future = runtime.scheduler.submit_image(job)
            try:
                result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(0.0, job.deadline - time.time()))
                return encode_image_result(result, runtime.name)
            except TimeoutError:
                future.cancel()
                raise DeadlineExceeded() from None
        finally:
            self._inflight -= 1

    async def session_worker(self, load: dict[str, int]) -> tuple[str, str]:
        runtime = self._runtime()
        if not runtime.host.ready:
            raise ModelUnavailable(f"The model is {runtime.host.state}: {runtime.host.reason or 'loading'}")
        return runtime.name, ""

    async def session_command(self, target: SessionTarget, message: SessionMessage, *, timeout: float) -> dict[str, Any]:
        future = require_manager().execute(message)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise DeadlineExceeded("The session command timed out.", code="command_timeout") from None

    async def live_push(self, target: SessionTarget, frame: LiveFrame) -> int | None:
        slots = require_manager().slots
        assert isinstance(slots, MemorySlots)  # this process's runtime has no Celery queue
        return slots.put(target.session_id, frame)

    def model_health(self) -> tuple[bool, dict]:
        if not (settings.CONFIG.image_model_enabled or settings.CONFIG.video_model_enabled):
            return True, {"state": "disabled"}
        runtime = current_runtime()
        if runtime is None:
            return False, {"state": "not started", "reason": "this process does not serve (use manage.py serve)"}
        host = runtime.host
        return host.ready, {"state": host.state, "reason": host.reason, "model": host.identity}
