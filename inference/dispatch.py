"""Web side of inference: admit a job, route it to a model worker, await its reply.

With REDIS_URL the job goes to a Celery model worker's own queue, chosen by the image's hash (so
its cached features are reused), and the reply comes back on a per-request Redis list awaited
without holding a thread. On the embedded default the model runs in this process.

An image result stays the bytes the worker serialised (:class:`inference.tasks.ImageReply`): the
web reads the reply's small envelope only and hands the body to the client as it is.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from typing import Any

import orjson
import redis.asyncio as aioredis
from django.conf import settings

from inference import registry
from inference.jobs import ImageJob
from inference.runtime_process import embedded_runtime
from inference.tasks import ImageReply, decode_reply, encode_image_result
from sam3site.errors import ApiError, DeadlineExceeded, ModelUnavailable, Overloaded, Unavailable

INFLIGHT_KEY = settings.CONFIG.redis_key_prefix + ":inflight:{queue}"
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

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def redis_client() -> aioredis.Redis:
    """One async client per event loop (tests and async_to_sync make several loops)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # No socket timeout: BLPOP waits on the server side, up to each call's own deadline.
        client = _clients[loop] = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=None)
    return client


async def live_workers() -> list[registry.WorkerInfo]:
    return registry.parse_workers(await redis_client().hgetall(registry.WORKERS_KEY))


def _unavailable(workers: list[registry.WorkerInfo]) -> ModelUnavailable:
    alive = [w for w in workers if w.alive]
    if not alive:
        return ModelUnavailable("No model worker is running (start them with manage.py run_workers).")
    reasons = {w.name: f"{w.state}: {w.reason}" if w.reason else w.state for w in alive}
    return ModelUnavailable("No model worker is ready: " + "; ".join(sorted(set(reasons.values()))), detail={"workers": reasons})


async def run_image_job(job: ImageJob) -> ImageReply:
    if not settings.CONFIG.image_model_enabled:
        raise Unavailable("Image segmentation is off (IMAGE_MODEL_ENABLED=False).", code="image_disabled")
    if settings.EMBEDDED:
        return await _run_embedded(job)
    return await _run_on_worker(job)


async def _run_on_worker(job: ImageJob) -> ImageReply:
    from inference.tasks import segment_image

    client = redis_client()
    workers = [w for w in await live_workers() if w.ready]
    if not workers:
        raise _unavailable(await live_workers())
    worker = registry.pick_worker(job.image_sha256, workers)
    inflight = INFLIGHT_KEY.format(queue=worker.queue)
    timeout = settings.CONFIG.inference_timeout_seconds
    admitted = await client.eval(
        _ADMIT, 1, inflight, time.time(), settings.CONFIG.inference_queue_limit, job.deadline, job.request_id, int(timeout) + 60
    )
    if not admitted:
        raise Overloaded(f"Worker {worker.name} has {settings.CONFIG.inference_queue_limit} requests in hand.", retry_after=RETRY_AFTER_SECONDS)
    try:
        envelope, body = await _call(segment_image, queue=worker.queue, args=(job.to_message(),), deadline=job.deadline)
    finally:
        await client.zrem(inflight, job.request_id)
    return ImageReply(body, envelope["splice"], envelope["worker"])


async def call_worker(task: Any, *, queue: str, args: tuple, deadline: float) -> dict[str, Any]:
    """Send ``task`` to one worker's queue and await its result (a dict, plus ``worker``) until ``deadline``."""
    envelope, body = await _call(task, queue=queue, args=args, deadline=deadline)
    return {**orjson.loads(body), "worker": envelope["worker"]}


async def _call(task: Any, *, queue: str, args: tuple, deadline: float) -> tuple[dict[str, Any], bytes]:
    """The reply's envelope (raised as the worker's error when not ok) and its undecoded body."""
    reply_key = f"{settings.CONFIG.redis_key_prefix}:reply:{uuid.uuid4().hex}"
    # Called on the event loop: publishing is one LPUSH to Redis (~0.3 ms), cheaper than a hop to
    # a thread and back (measured: docs/benchmarks.md, "after the hot-path work").
    task.apply_async(args=(*args, reply_key), queue=queue, expires=max(0.0, deadline - time.time()))
    allowed = deadline - time.time()
    reply = await redis_client().blpop([reply_key], timeout=max(0.1, allowed)) if allowed > 0 else None
    if reply is None:
        raise DeadlineExceeded(f"The model worker did not answer within {max(0.0, allowed):.1f}s.")
    envelope, body = decode_reply(reply[1])
    if not envelope["ok"]:
        error = envelope["error"]
        raised = ApiError(error["message"], code=error["code"], detail=error.get("detail"))
        raised.status_code = error["status"]
        raise raised
    return envelope, body


_embedded_inflight = 0


async def _run_embedded(job: ImageJob) -> ImageReply:
    global _embedded_inflight
    runtime = embedded_runtime()
    if not runtime.host.ready:
        raise ModelUnavailable(
            f"The model is {runtime.host.state}" + (f": {runtime.host.reason}" if runtime.host.reason else "."),
            retry_after=RETRY_AFTER_SECONDS if runtime.host.state == "loading" else None,
        )
    if _embedded_inflight >= settings.CONFIG.inference_queue_limit:
        raise Overloaded(retry_after=RETRY_AFTER_SECONDS)
    _embedded_inflight += 1
    try:
        future = runtime.scheduler.submit_image(job)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(0.0, job.deadline - time.time()))
            return encode_image_result(result, runtime.name)
        except TimeoutError:
            future.cancel()
            raise DeadlineExceeded() from None
    finally:
        _embedded_inflight -= 1
