"""Celery tasks run by model workers. Replies go to a per-request Redis list the web awaits, in the
format of :mod:`inference.messages` (the result is serialised once, here)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from loguru import logger

from inference.jobs import ImageJob
from inference.messages import dumps, encode_image_result, encode_reply, error_payload
from inference.runtime_process import ModelRuntime, current_runtime, start_runtime
from sam3site import redis_clients
from sam3site.errors import ApiError, DeadlineExceeded, ModelUnavailable, as_api_error
from sam3site.processes import WORKER_DEVICE_ENV, WORKER_QUEUE_ENV

REPLY_TTL_SECONDS = 120


def send_reply(reply_key: str, reply: bytes) -> None:
    pipeline = redis_clients.client(timeout=None).pipeline()
    pipeline.rpush(reply_key, reply)
    pipeline.expire(reply_key, REPLY_TTL_SECONDS)
    pipeline.execute()


def _result_reply(result: Any, worker: str) -> bytes:
    return encode_reply({"ok": True, "worker": worker}, dumps(result))


def _image_reply(result: dict[str, Any], worker: str) -> bytes:
    image = encode_image_result(result, worker)
    return encode_reply({"ok": True, "worker": worker, "splice": image.splice}, image.body)


def reply_when_done(
    reply_key: str, submit: Callable[[ModelRuntime], Future], timeout: float, what: str,
    encode: Callable[[Any, str], bytes] = _result_reply,
) -> None:
    """Run work on this worker's model thread and push the outcome (result or error body) to ``reply_key``."""
    runtime = current_runtime()
    try:
        if runtime is None:
            raise ModelUnavailable("This Celery worker hosts no model (start workers with manage.py run_workers).")
        future = submit(runtime)
        try:
            result = future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise DeadlineExceeded() from None
        reply = encode(result, runtime.name)
    except Exception as error:  # noqa: BLE001 - every outcome is a reply
        mapped = as_api_error(error)
        if mapped is None:
            logger.opt(exception=error).error("{} failed", what)
            mapped = ApiError("Internal error in the model worker.", code="internal_error", status=500)
        reply = encode_reply(error_payload(mapped))
    send_reply(reply_key, reply)


@shared_task(name="inference.segment_image", ignore_result=True)
def segment_image(message: dict[str, Any], reply_key: str) -> None:
    job = ImageJob.from_message(message)
    reply_when_done(
        reply_key, lambda runtime: runtime.scheduler.submit_image(job),
        timeout=max(0.0, job.deadline - time.time()) + 5, what=f"Job {job.request_id}", encode=_image_reply,
    )


@worker_ready.connect
def _start_model_runtime(**_kwargs: object) -> None:
    device = os.environ.get(WORKER_DEVICE_ENV)
    if device:  # only workers started by run_workers host a model
        start_runtime(device=device, queue=os.environ.get(WORKER_QUEUE_ENV))


@worker_shutdown.connect
def _stop_model_runtime(**_kwargs: object) -> None:
    runtime = current_runtime()
    if runtime is not None:
        runtime.stop()
