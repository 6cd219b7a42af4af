"""Websocket of one video session: per-frame results as they are computed, and commands.

Authentication: the X-API-Key header (programs), or for browsers a single-use ticket from
``POST /api/v1/sessions/<id>/ticket/`` as ``?ticket=`` or as the subprotocol ``ticket.<ticket>``.
Only the session's owner may connect (anyone else's handshake is refused with HTTP 403, as a
missing key is). A browser's Origin must match ALLOWED_HOSTS; clients that send no Origin
(programs) are let through when they bring a key or a ticket (sam3site.websocket_auth).

Server messages: ``frame``, ``progress``, ``done``, ``cancelled``, ``error``, ``status``, plus the
answers to client commands (``prompt_result``, ``propagation``, ``cancelling``). Client messages:
``{"type": "prompt", ...}``, ``{"type": "propagate", ...}``, ``{"type": "cancel"}``. Binary, empty,
non-JSON and unknown messages, and messages over MAX_MESSAGE_BYTES, are answered with an
``error`` message and the socket stays open (daphne itself drops messages over
``serve``'s WEBSOCKET_HARD_LIMIT_BYTES).

When the session ends (closed, expired, failed) the socket gets the ``status`` event, then is
closed with code SESSION_ENDED_CLOSE_CODE; connecting to an ended session does the same.

Slow readers: the server cannot see how much of what it sent a client has read, so clients say
so: ``{"type": "ack"}`` acknowledges every frame received so far. At most UNACKED_FRAME_LIMIT
frames carry their masks unacknowledged; after that, frames come as small notices
(``masks_omitted: true``) until the next ack, and the client reads the masks from
``GET /api/v1/sessions/<id>/frames/`` (every frame is stored). A client that stops reading
altogether stops answering pings and is disconnected. So each connection buffers at most
UNACKED_FRAME_LIMIT frames of masks plus a notice per frame.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.exceptions import ValidationError

from sam3site.api import validated
from sam3site.errors import ApiError, as_api_error
from sam3site.websocket_auth import TICKET_SUBPROTOCOL_PREFIX
from sessions import commands, events, selectors
from sessions.models import VideoSession
from sessions.serializers import ObjectSerializer, PropagateSerializer, VideoPromptSerializer
from sessions.views import ticket_cache_key

UNACKED_FRAME_LIMIT = 64
MAX_MESSAGE_BYTES = 1024 * 1024  # client messages are small commands; bigger ones are answered with an error
SESSION_ENDED_CLOSE_CODE = 4410  # "410 Gone" in the application's close-code range
ENDED_STATUSES = frozenset({VideoSession.Status.CLOSED, VideoSession.Status.EXPIRED, VideoSession.Status.FAILED})


@database_sync_to_async
def _redeem_ticket(ticket: str, session_id: str) -> Any:
    key = ticket_cache_key(ticket)
    grant = cache.get(key)
    # Single use: of handshakes racing with one ticket, only the one whose delete removed it gets in.
    if not grant or not cache.delete(key) or grant["session_id"] != session_id:
        return None
    return get_user_model().objects.filter(pk=grant["user_id"], is_active=True).first()


@database_sync_to_async
def _owned_session(user: Any, session_id: str) -> VideoSession | None:
    return selectors.sessions_of(owner=user).filter(pk=session_id).first()


class SessionConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        events.bind_server_loop(asyncio.get_running_loop())
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        user = self.scope.get("user")
        subprotocol = None
        if user is None or not user.is_authenticated:
            ticket = parse_qs(self.scope.get("query_string", b"").decode()).get("ticket", [None])[0]
            offered = [p for p in self.scope.get("subprotocols", []) if p.startswith(TICKET_SUBPROTOCOL_PREFIX)]
            if ticket is None and offered:
                subprotocol = offered[0]
                ticket = subprotocol.removeprefix(TICKET_SUBPROTOCOL_PREFIX)
            user = await _redeem_ticket(ticket, self.session_id) if ticket else None
        if user is None:
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        session = await _owned_session(user, self.session_id)
        if session is None or not self.admits(session):
            await self.close()  # other clients' sessions do not exist for you: refused like a bad key
            return
        self.user = user
        self.unacked_frames = 0
        self.group = events.group_name(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept(subprotocol=subprotocol)
        await self.send_json({"type": "status", "status": session.status, "frame_count": session.frame_count,
                              "propagation": session.propagation, **({"message": session.error} if session.error else {})})
        if not session.is_open:
            await self.close(code=SESSION_ENDED_CLOSE_CODE)

    def admits(self, session: VideoSession) -> bool:
        """Whether this kind of socket serves this session (every session has this one)."""
        return True

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def session_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event["type"] == "frame":
            if self.unacked_frames >= UNACKED_FRAME_LIMIT:
                event = {
                    "type": "frame", "frame": event["frame"], **({"seq": event["seq"]} if "seq" in event else {}),
                    "object_count": len(event["objects"]), "masks_omitted": True,
                }
            else:
                self.unacked_frames += 1
        await self.send_json(event)
        if event["type"] == "status" and event["status"] in ENDED_STATUSES:
            await self.close(code=SESSION_ENDED_CLOSE_CODE)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ack":  # once per frame: no database round trip
            self.unacked_frames = 0
            return
        try:
            session = await _owned_session(self.user, self.session_id)
            if session is None:
                await self.close()
                return
            if kind == "prompt":
                prompt = await sync_to_async(validated)(VideoPromptSerializer, {k: v for k, v in content.items() if k != "type"})
                result = await commands.session_prompt(session=session, prompt=prompt)
                await self.send_json({"type": "prompt_result", **result})
            elif kind == "propagate":
                data = await sync_to_async(validated)(PropagateSerializer, {k: v for k, v in content.items() if k != "type"})
                propagation = await commands.session_propagate(
                    session=session, direction=data["direction"], start_frame=data.get("start_frame"),
                    max_frames=data.get("max_frames"), resume=data["resume"],
                )
                await self.send_json({"type": "propagation", **propagation})
            elif kind == "cancel":
                await self.send_json({"type": "cancelling", **await commands.session_cancel(session=session)})
            elif kind == "remove_object":
                data = await sync_to_async(validated)(ObjectSerializer, {k: v for k, v in content.items() if k != "type"})
                result = await commands.session_edit(session=session, kind="remove_object", object_id=data["object_id"])
                await self.send_json({"type": "edit_result", **result})
            elif kind == "reset":
                await self.send_json({"type": "edit_result", **await commands.session_edit(session=session, kind="reset")})
            else:
                await self._error(
                    "invalid_message", 'Messages are JSON objects with "type": prompt, propagate, cancel, remove_object, reset or ack.'
                )
        except (ApiError, ValidationError) as failure:
            error = as_api_error(failure)
            assert error is not None  # ApiError and DRF's ValidationError always translate
            await self._error(error.code, error.message, error.detail)
            if error.status_code == 410:
                await self.close(code=SESSION_ENDED_CLOSE_CODE)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        # channels raises on binary and empty messages, which kills the socket (1011)
        if not text_data:
            await self._error("invalid_message", "Messages are JSON text; binary and empty messages are not understood.")
            return
        if len(text_data.encode()) > MAX_MESSAGE_BYTES:
            await self._error(
                "message_too_large", f"Messages are at most {MAX_MESSAGE_BYTES} bytes.", {"limit_bytes": MAX_MESSAGE_BYTES}
            )
            return
        await self.receive_json(await self.decode_json(text_data), **kwargs)

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None  # answered as an invalid message, the socket stays open

    async def _error(self, code: str, message: str, detail: Any = None) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, "detail": detail})
