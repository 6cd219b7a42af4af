"""Websocket of a live session, ``/ws/sessions/<id>/live/``: the client pushes frames, the server
answers each computed frame with its objects. Authentication, ownership, acks and slow readers,
the ``status`` events and the close on session end are the session websocket's
(:mod:`sessions.consumers`).

Client -> server: binary messages are frames (:mod:`inference.live_frames`: a length-prefixed JSON
header ``{"seq", "ts"?}`` and a JPEG/PNG/WebP image); text messages are the session commands, where
``prompt`` names its frame by ``seq`` (text prompts need none). Server -> client, besides the
session events: ``{"type": "frame", "seq", "frame", "ts"?, "objects"}`` per computed frame,
``{"type": "skipped", "seqs": [...]}`` for frames replaced by a newer one before the model took
them (latest-wins), and ``error`` for a refused frame (with its ``seq`` in ``detail``); the socket
stays open.
"""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async

from inference.gateway import SessionTarget, gateway
from inference.live_frames import parse_frame
from sam3site.errors import ApiError
from sessions import services
from sessions.consumers import SessionConsumer
from sessions.models import VideoSession

TOUCH_EVERY_SECONDS = 10  # a streaming session is active: its idle clock is reset at most this often


class LiveSessionConsumer(SessionConsumer):
    def admits(self, session: VideoSession) -> bool:
        self.target = _target(session)
        self.touched_at = 0.0
        return session.kind == VideoSession.Kind.LIVE

    async def session_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event["type"] == "status" and event["status"] == VideoSession.Status.RECOVERING:
            # another worker has claimed the session (the record says which): frames go there from now on
            self.target = _target(await database_sync_to_async(VideoSession.objects.get)(pk=self.target.session_id))
        await super().session_event(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if bytes_data:
            await self._frame(bytes_data)
        else:
            await super().receive(text_data=text_data, bytes_data=bytes_data, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "prompt":
            # the frame a prompt was given on is named by its seq (text prompts name none)
            content = {**{k: v for k, v in content.items() if k != "seq"}, "frame": content.get("seq", 0)}
        await super().receive_json(content, **kwargs)

    async def _frame(self, message: bytes) -> None:
        try:
            frame = parse_frame(message)
            replaced = await gateway().live_push(self.target, frame)
        except ApiError as error:
            await self._error(error.code, error.message, error.detail)
            return
        if replaced is not None:
            await self.send_json({"type": "skipped", "seqs": [replaced]})
        now = time.monotonic()
        if now - self.touched_at > TOUCH_EVERY_SECONDS:
            self.touched_at = now
            await database_sync_to_async(services.session_touch)(session_id=self.target.session_id)


def _target(session: VideoSession) -> SessionTarget:
    return SessionTarget(session_id=str(session.pk), worker=session.worker, queue=session.worker_queue)
