"""The Celery/Redis transport of :class:`inference.gateway.CeleryGateway`: admit a job, route it to a
model worker's queue, await its reply on a per-request Redis list without holding a thread.

Image jobs go to the worker chosen by the image's hash (so its cached features are reused). An
image result stays the bytes the worker serialised (:class:`inference.messages.ImageReply`): the
web reads the reply's small envelope only and hands the body to the client as it is. Tasks are
sent by name, so web processes never import the worker's task modules.
"""

from __future__ import annotations

import time
from typing import Any, cast

import orjson
from celery import current_app
from django.conf import settings

from inference import registry
from inference.jobs import ImageJob
from inference.messages import ImageReply, decode_reply, error_from_payload
from sam3site import redis_clients
from sam3site.errors import DeadlineExceeded, ModelUnavailable, Overloaded, Unavailable

SEGMENT_IMAGE_TASK = "inference.segment_image"  # inference.tasks.segment_image
RETRY_AFTER_SECONDS = 2

# Atomically: forget expired entries, refuse when full, else admit. Entries carry their deadline
# as score, so a web process that dies mid-request cannot leak a slot for longer than that.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


async def live_workers() -> list[registry.WorkerInfo]:
    return registry.parse_workers(await redis_clients.async_client().hgetall(redis_clients.WORKERS_KEY))


def _unavailable(workers: list[registry.WorkerInfo]) -> ModelUnavailable:
    alive = [w for w in workers if w.alive]
    if not alive:
        return ModelUnavailable("No model worker is running (start them with manage.py run_workers).")
    reasons = {w.name: f"{w.state}: {w.reason}" if w.reason else w.state for w in alive}
    return ModelUnavailable("No model worker is ready: " + "; ".join(sorted(set(reasons.values()))), detail={"workers": reasons})


async def run_image_job(job: ImageJob) -> ImageReply:
    """The web's entry point for an image job, through whichever gateway the settings name."""
    from inference.gateway import gateway

    if not settings.CONFIG.image_model_enabled:
        raise Unavailable("Image segmentation is off (IMAGE_MODEL_ENABLED=False).", code="image_disabled")
    return await gateway().run_image_job(job)


async def run_on_worker(job: ImageJob) -> ImageReply:
    client = redis_clients.async_client()
    workers = [w for w in await live_workers() if w.ready]
    if not workers:
        raise _unavailable(await live_workers())
    worker = registry.pick_worker(job.image_sha256, workers)
    inflight = redis_clients.inflight_key(worker.queue)
    timeout = settings.CONFIG.inference_timeout_seconds
    admitted = await client.eval(
        _ADMIT, 1, inflight, time.time(), settings.CONFIG.inference_queue_limit, job.deadline, job.request_id, int(timeout) + 60
    )
    if not admitted:
        raise Overloaded(
            f"Worker {worker.name} has {settings.CONFIG.inference_queue_limit} requests in hand.", retry_after=RETRY_AFTER_SECONDS
        )
    try:
        envelope, body = await _call(SEGMENT_IMAGE_TASK, queue=worker.queue, args=(job.to_message(),), deadline=job.deadline)
    finally:
        await client.zrem(inflight, job.request_id)
    return ImageReply(body, envelope["splice"], envelope["worker"])


async def call_worker(task_name: str, *, queue: str, args: tuple, deadline: float) -> dict[str, Any]:
    """Send the task to one worker's queue and await its result (a dict, plus ``worker``) until ``deadline``."""
    envelope, body = await _call(task_name, queue=queue, args=args, deadline=deadline)
    return {**orjson.loads(body), "worker": envelope["worker"]}


async def _call(task_name: str, *, queue: str, args: tuple, deadline: float) -> tuple[dict[str, Any], bytes]:
    """The reply's envelope (raised as the worker's error when not ok) and its undecoded body."""
    reply_key = redis_clients.new_reply_key()
    # Called on the event loop, not through a thread: publishing is ~0.5 ms of CPU and one LPUSH,
    # less than a hop to a thread and back (docs/benchmarks.md, "after the hot-path work"). A short
    # argsrepr spares Celery a saferepr of the whole message (a third of its cost).
    current_app.send_task(
        task_name, args=(*args, reply_key), queue=queue, expires=max(0.0, deadline - time.time()),
        argsrepr=reply_key, kwargsrepr="{}",
    )
    allowed = deadline - time.time()
    reply = await redis_clients.async_client().blpop([reply_key], timeout=max(0.1, allowed)) if allowed > 0 else None
    if reply is None:
        raise DeadlineExceeded(f"The model worker did not answer within {max(0.0, allowed):.1f}s.")
    envelope, body = decode_reply(cast(bytes, reply[1]))  # the client does not decode responses
    if not envelope["ok"]:
        raise error_from_payload(envelope["error"])
    return envelope, body
