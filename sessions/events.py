"""Pushing session events to websocket clients through the channel layer, one group per session.

Publishers are threads (the worker's writer thread, request threads), not the event loop, so
events go through a loop of their own — a background loop thread, or with the in-memory channel
layer (embedded default) the server's own loop, which that layer's queues belong to — and through
one queue drained by one task, so they arrive in the order they were published.

A model worker's events are fenced by its ownership epoch (docs/video-sessions.md, "Ownership"):
:func:`publish_as_owner` publishes through one Redis script that first compares the worker's epoch
with the session's epoch key, which :func:`fence` raises before a new owner takes the session's
record. Redis runs scripts one at a time, so once a session is fenced no event of its replaced
owner reaches a client, and every event of the old owner a client sees came before the new
owner's first one.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from loguru import logger

from sam3site import redis_clients

EPOCH_KEY_TTL_SECONDS = 7 * 24 * 3600  # outlives any session; raised again by every claim
MAX_PENDING_EVENTS = 10_000  # if the channel layer stalls, newer events are dropped (results are stored anyway)


class _Publisher:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self.queue = asyncio.Queue(MAX_PENDING_EVENTS)
        self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        layer = get_channel_layer()
        while True:
            group, event = await self.queue.get()  # type: ignore[union-attr]
            try:
                await layer.group_send(group, {"type": "session.event", "event": event})
            except Exception as error:  # noqa: BLE001 - never stop draining
                logger.warning("Session event not delivered: {}", error)
            finally:
                self.queue.task_done()  # type: ignore[union-attr]

    async def drained(self) -> None:
        await self.queue.join()  # type: ignore[union-attr]

    def put(self, group: str, event: dict[str, Any]) -> None:
        def enqueue() -> None:
            try:
                self.queue.put_nowait((group, event))  # type: ignore[union-attr]
            except asyncio.QueueFull:
                logger.warning("Session event dropped: the channel layer is not keeping up")

        self.loop.call_soon_threadsafe(enqueue)


_publisher: _Publisher | None = None
_lock = threading.Lock()


def group_name(session_id: str) -> str:
    return f"video_session_{str(session_id).replace('-', '')}"


def bind_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    """In-memory channel layer: events go through the loop the websocket consumers run on."""
    global _publisher
    with _lock:
        if _in_memory_layer() and _publisher is None:
            _publisher = _Publisher(loop)


def _in_memory_layer() -> bool:
    return isinstance(get_channel_layer(), InMemoryChannelLayer)


def _current_publisher() -> _Publisher | None:
    global _publisher
    with _lock:
        if _publisher is None and not _in_memory_layer():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="session-events", daemon=True).start()
            _publisher = _Publisher(loop)
        return _publisher


def flush(timeout: float = 5.0) -> None:
    """Wait until the events published so far have reached the channel layer: a short-lived
    process (cron's cleanup_sessions) must not exit with its events still queued."""
    with _lock:
        publisher = _publisher
    if publisher is None or publisher.loop.is_closed():
        return
    done = asyncio.run_coroutine_threadsafe(publisher.drained(), publisher.loop)
    try:
        done.result(timeout)
    except TimeoutError:
        logger.warning("Session events still undelivered after {} s", timeout)


def publish(session_id: str, event: dict[str, Any]) -> None:
    """Send ``event`` to the session's websocket clients, in order. Never raises or blocks."""
    publisher = _current_publisher()
    if publisher is not None:  # None: in-memory layer with no websocket connected yet, nobody to tell
        publisher.put(group_name(session_id), event)


# --- fencing (model workers' events) ---

_FENCED_PUBLISH = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > tonumber(ARGV[1]) then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
_RAISE_EPOCH = """
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""


def _epoch_key(session_id: str) -> str:
    return redis_clients.key("session-epoch", str(session_id))


def fence(session_id: str, epoch: int) -> None:
    """From now on only events of owners with at least ``epoch`` reach the session's clients."""
    if not _in_memory_layer():  # in memory: one process, no other owner to fence
        redis_clients.client().eval(_RAISE_EPOCH, 1, _epoch_key(session_id), epoch, EPOCH_KEY_TTL_SECONDS)


def publish_as_owner(session_id: str, event: dict[str, Any], epoch: int) -> bool:
    """Publish a model worker's event unless a newer owner has fenced the session (then False).

    Synchronous, on the caller's thread (the worker's writer): its events keep their order."""
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        publish(session_id, event)
        return True
    # channels_redis' pub/sub layer publishes a group's messages on "<prefix>__group__<group>".
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]  # type: ignore[index]  # a dict in settings.py
    channel = f"{prefix}__group__{group_name(session_id)}"
    message = layer.serialize({"type": "session.event", "event": event})
    return bool(redis_clients.client().eval(_FENCED_PUBLISH, 1, _epoch_key(session_id), epoch, channel, message))
