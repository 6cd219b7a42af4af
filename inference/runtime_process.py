"""The model runtime of the current process: a Celery model worker, or the embedded server
(started by :class:`inference.inprocess.InProcessGateway`). Worker side."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from loguru import logger

from inference import registry
from inference.metrics import WORKERS_UP
from sam3site import redis_clients
from sam3site.processes import EXIT_MODEL_REQUIRED

if TYPE_CHECKING:
    from inference.host import HostSettings

_runtime: ModelRuntime | None = None
_runtime_lock = threading.Lock()


def host_settings(device: str, *, tiny_fallback: bool = False) -> HostSettings:
    from inference.host import HostSettings
    from inference.runtime.checkpoints import conversion_cache_dir

    config = settings.CONFIG
    return HostSettings(
        checkpoint=config.sam3_checkpoint,
        bpe_path=config.sam3_bpe_path,
        device=device,
        # One backbone serves images and video, so either flag compiles it.
        compile=config.image_model_compile or (config.video_model_enabled and config.video_model_compile),
        # The checkpoint's own input size unless IMAGE_MODEL_RESOLUTION is set explicitly
        # (its default, 1008, is the published model's size).
        resolution=config.image_model_resolution if "image_model_resolution" in config.model_fields_set else None,
        enabled=config.image_model_enabled or config.video_model_enabled,
        cache_bytes=config.max_cache_size_mb * 1024 * 1024 if config.enable_feature_cache else 0,
        cache_ttl_seconds=config.feature_cache_ttl_seconds,
        max_batch_size=config.inference_max_batch_size,
        tiny_fallback_dir=Path(config.data_dir) / "tiny-sam3" if tiny_fallback else None,
        conversion_cache_dir=conversion_cache_dir(config.data_dir),
        mask_postprocessing=config.mask_postprocessing,
    )


class ModelRuntime:
    def __init__(self, *, device: str, queue: str | None, tiny_fallback: bool = False) -> None:
        from inference.host import ModelHost
        from inference.scheduler import ModelScheduler

        self.device = device
        self.queue = queue
        self.name = registry.worker_name(queue, os.getpid())
        self.host = ModelHost(host_settings(device, tiny_fallback=tiny_fallback))
        self.scheduler = ModelScheduler(self.host, max_batch_size=settings.CONFIG.inference_max_batch_size)
        self.started_at = time.time()
        self.session_count: Callable[[], int] = lambda: 0  # set by the video session manager
        self._stop = threading.Event()

    def start(self) -> None:
        self.scheduler.start(load=True)
        self.scheduler.call(self._refuse_to_run_without_required_model)
        if self.queue is not None:
            threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._report_up, name="up-gauge", daemon=True).start()

    def _refuse_to_run_without_required_model(self) -> None:
        config = settings.CONFIG
        if config.video_model_required and config.video_model_enabled and not self.host.ready:
            logger.critical("VIDEO_MODEL_REQUIRED is set and the model did not load ({}); stopping", self.host.reason)
            os._exit(EXIT_MODEL_REQUIRED)  # from the model thread: the whole process must go

    def stop(self) -> None:
        self._stop.set()
        self.scheduler.stop()
        if self.queue is not None:
            registry.withdraw(redis_clients.client(), self.name)

    def info(self) -> registry.WorkerInfo:
        return registry.WorkerInfo(
            name=self.name, queue=self.queue or "", device=self.device, state=self.host.state, reason=self.host.reason,
            model=self.host.identity, pending=self.scheduler.pending, beat_at=time.time(), started_at=self.started_at,
            cache=self.host.cache.stats(), sessions=self.session_count(),
        )

    def _heartbeat(self) -> None:
        client = redis_clients.client()
        while not self._stop.is_set():
            try:
                registry.publish(client, self.info())
            except redis.RedisError as error:
                logger.warning("Heartbeat failed: {}", error)
            self._stop.wait(registry.HEARTBEAT_SECONDS)

    def _report_up(self) -> None:
        while not self._stop.wait(1.0):
            WORKERS_UP.set(1 if self.host.ready else 0)


def start_runtime(*, device: str, queue: str | None, tiny_fallback: bool = False) -> ModelRuntime:
    """``tiny_fallback``: the embedded quick start writes and uses the tiny model when the weights are missing."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = ModelRuntime(device=device, queue=queue, tiny_fallback=tiny_fallback)
            _runtime.start()
            logger.info("Model runtime {} starting on {}", _runtime.name, device)
        return _runtime


def current_runtime() -> ModelRuntime | None:
    return _runtime
