"""Pushing session events to websocket clients through the channel layer, one group per session.

Publishers are threads (the worker's writer thread, request threads), not the event loop, so
events go through a loop of their own — a background loop thread, or with the in-memory channel
layer (embedded default) the server's own loop, which that layer's queues belong to — and through
one queue drained by one task, so they arrive in the order they were published.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from loguru import logger

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
