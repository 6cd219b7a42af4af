"""Celery tasks run by model workers. Replies go to a per-request Redis list the web awaits.

A reply is ``<envelope JSON>\n<result JSON>``: the envelope is small (``ok``, ``worker``, or the
error) and the web reads only it; the result is serialised once, here, and an image result goes to
the client as these very bytes (the web splices in ``timings_ms.total`` at ``splice``). Compact
JSON never contains a raw newline, so the first one ends the envelope.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from loguru import logger

from inference.jobs import ImageJob
from inference.runtime_process import (
    WORKER_DEVICE_ENV,
    WORKER_QUEUE_ENV,
    ModelRuntime,
    current_runtime,
    start_runtime,
)
from sam3site.errors import ApiError, DeadlineExceeded, ModelUnavailable, as_api_error

REPLY_TTL_SECONDS = 120
_reply_client: redis.Redis | None = None


def _replies() -> redis.Redis:
    global _reply_client
    if _reply_client is None:
        _reply_client = redis.Redis.from_url(settings.REDIS_URL)
    return _reply_client


# Non-string keys as JSON does them (stringified); numpy scalars/arrays as their values.
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_JSON_OPTIONS)


@dataclass(frozen=True)
class ImageReply:
    """An image result as the client receives it, less ``timings_ms.total`` (inserted at ``splice``)."""

    body: bytes
    splice: int
    worker: str

    def with_total(self, total_ms: float) -> bytes:
        return b"%s,\"total\":%s%s" % (self.body[: self.splice], dumps(round(total_ms, 2)), self.body[self.splice :])


def encode_image_result(result: dict[str, Any], worker: str) -> ImageReply:
    """The response body, ``timings_ms`` then ``worker`` last (as the API has always ordered them)."""
    timings = result["timings_ms"]
    body = dumps({**{k: v for k, v in result.items() if k != "timings_ms"}, "timings_ms": timings, "worker": worker})
    tail = b"},\"worker\":" + dumps(worker) + b"}"  # closes timings_ms: ``total`` goes right before it
    if not timings or not body.endswith(tail):
        raise ValueError("image result without timings_ms")  # cannot happen: ModelHost always reports them
    return ImageReply(body, len(body) - len(tail), worker)


def encode_reply(envelope: dict[str, Any], body: bytes = b"") -> bytes:
    return dumps(envelope) + b"\n" + body


def decode_reply(reply: bytes) -> tuple[dict[str, Any], bytes]:
    envelope, _, body = reply.partition(b"\n")
    return orjson.loads(envelope), body


def send_reply(reply_key: str, reply: bytes) -> None:
    pipeline = _replies().pipeline()
    pipeline.rpush(reply_key, reply)
    pipeline.expire(reply_key, REPLY_TTL_SECONDS)
    pipeline.execute()


def error_payload(error: ApiError) -> dict[str, Any]:
    return {"ok": False, "error": {"code": error.code, "message": error.message, "detail": error.detail, "status": error.status_code}}


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
            mapped = ApiError("Internal error in the model worker.", code="internal_error")
            mapped.status_code = 500
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
