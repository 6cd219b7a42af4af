"""Pushing session events to websocket clients through the channel layer, one group per session.

The model thread is not an event loop, so events go through a loop of their own: a background
loop thread with Redis, or, on the embedded default, the server's own loop (the in-memory layer's
queues belong to it and must not be touched from another loop).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from loguru import logger

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def group_name(session_id: str) -> str:
    return f"video_session_{str(session_id).replace('-', '')}"


def bind_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Embedded default: events go through the loop the websocket consumers run on."""
    global _loop
    if settings.EMBEDDED:
        _loop = loop


def _publisher_loop() -> asyncio.AbstractEventLoop | None:
    global _loop
    with _lock:
        if _loop is None and not settings.EMBEDDED:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="session-events", daemon=True).start()
        return _loop


def publish(session_id: str, event: dict[str, Any], *, wait: bool = False) -> None:
    """Send ``event`` to the session's websocket clients. Never raises: results are stored anyway."""
    loop = _publisher_loop()
    if loop is None:
        return  # embedded default with no websocket connected yet: nobody to tell
    layer = get_channel_layer()
    future = asyncio.run_coroutine_threadsafe(
        layer.group_send(group_name(session_id), {"type": "session.event", "event": event}), loop
    )
    if wait:
        try:
            future.result(timeout=5)
        except Exception as error:  # noqa: BLE001
            logger.warning("Session event not delivered: {}", error)
