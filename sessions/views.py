from __future__ import annotations

import secrets
from typing import Any

from adrf.views import APIView
from asgiref.sync import sync_to_async
from django.core.cache import cache
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import authenticated_user
from sam3site.api import validated
from sam3site.errors import NotFound
from sam3site.pagination import BoundedLimitOffsetPagination
from sam3site.schema import PAGINATION_PARAMETERS, errors
from sessions import commands, selectors, services
from sessions.models import VideoSession
from sessions.serializers import (
    CancelResultSerializer,
    ObjectSerializer,
    ObjectsResultSerializer,
    PaginatedFrameResultListSerializer,
    PaginatedVideoSessionListSerializer,
    PropagateSerializer,
    PropagationStartedSerializer,
    RemovedObjectSerializer,
    SessionCreateSerializer,
    SessionPromptResultSerializer,
    TicketSerializer,
    VideoPromptSerializer,
    VideoSessionDetailSerializer,
    VideoSessionSerializer,
)

TICKET_SECONDS = 60


def ticket_cache_key(ticket: str) -> str:
    return f"ws-ticket:{ticket}"


class SessionViewMixin:
    def get_session(self, request: Request, session_id: Any, *, ended_ok: bool = False) -> VideoSession:
        """The caller's session; an ended one answers 410 unless ``ended_ok`` (reading the record, closing)."""
        session = selectors.sessions_of(owner=authenticated_user(request)).filter(pk=session_id).first()
        if session is None:
            raise NotFound(f"Session {session_id} not found.", code="session_not_found")
        if not ended_ok:
            commands.require_open(session)
        return session


class SessionListView(SessionViewMixin, APIView):
    """Your video sessions; POST opens one on an uploaded video."""

    @extend_schema(operation_id="v1_sessions_list", responses=PaginatedVideoSessionListSerializer, parameters=PAGINATION_PARAMETERS)
    async def get(self, request: Request) -> Response:
        def page() -> Response:
            paginator = BoundedLimitOffsetPagination()
            rows = paginator.paginate_queryset(selectors.sessions_of(owner=authenticated_user(request)), request, view=self)
            return paginator.get_paginated_response(VideoSessionSerializer(rows, many=True).data)

        return await sync_to_async(page)()

    @extend_schema(
        request=SessionCreateSerializer,
        responses={201: VideoSessionDetailSerializer, **errors(404, 503, 504)},
        examples=[
            OpenApiExample("A session over an uploaded video", value={"video": "3fa85f64-5717-4562-b3fc-2c963f66afa6"}, request_only=True),
            OpenApiExample("A live session: frames pushed over its websocket", value={"live": True}, request_only=True),
            OpenApiExample("A live session reading a camera", value={"live": True, "source_url": "rtsp://camera.example.com/stream"},
                           request_only=True),
        ],
    )
    async def post(self, request: Request) -> Response:
        data = await sync_to_async(validated)(SessionCreateSerializer, request.data)
        live = {"store": data["store"], "mask_format": data["mask_format"]} if data["live"] else None
        if live is not None and "source_url" in data:
            # network waits (DNS, the redirect hops) off the thread the ORM calls share
            live["source_url"] = await sync_to_async(services.stream_url_check, thread_sensitive=False)(url=data["source_url"])
        session = await commands.session_open(owner=authenticated_user(request), video_id=data.get("video"), live=live)
        body = await sync_to_async(lambda: VideoSessionDetailSerializer(session).data)()
        return Response(body, status=status.HTTP_201_CREATED)


class SessionDetailView(SessionViewMixin, APIView):
    @extend_schema(responses=VideoSessionDetailSerializer)
    async def get(self, request: Request, session_id: str) -> Response:
        session = await sync_to_async(self.get_session)(request, session_id, ended_ok=True)
        return Response(await sync_to_async(lambda: VideoSessionDetailSerializer(session).data)())

    @extend_schema(responses={204: None}, summary="Close the session (frees the worker's memory and the results)")
    async def delete(self, request: Request, session_id: str) -> Response:
        session = await sync_to_async(self.get_session)(request, session_id, ended_ok=True)
        await commands.session_close(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionPromptView(SessionViewMixin, APIView):
    @extend_schema(
        request=VideoPromptSerializer, responses={200: SessionPromptResultSerializer, **errors(409, 410, 503, 504)},
        summary="Prompt on a frame",
        examples=[
            OpenApiExample("Text: track every person", value={"frame": 0, "text": "person"}, request_only=True),
            OpenApiExample("A click on a new object", value={"frame": 0, "points": [[32, 24]], "point_labels": [1]}, request_only=True),
        ],
    )
    async def post(self, request: Request, session_id: str) -> Response:
        session = await sync_to_async(self.get_session)(request, session_id)
        prompt = await sync_to_async(validated)(VideoPromptSerializer, request.data)
        return Response(await commands.session_prompt(session=session, prompt=prompt))


class SessionRemoveObjectView(SessionViewMixin, APIView):
    @extend_schema(
        request=ObjectSerializer, responses={200: RemovedObjectSerializer, **errors(409, 410, 503, 504)},
        summary="Stop tracking an object", examples=[OpenApiExample("An object", value={"object_id": 10000}, request_only=True)],
    )
    async def post(self, request: Request, session_id: str) -> Response:
        session = await sync_to_async(self.get_session)(request, session_id)
        data = await sync_to_async(validated)(ObjectSerializer, request.data)
        return Response(await commands.session_edit(session=session, kind="remove_object", object_id=data["object_id"]))


class SessionResetView(SessionViewMixin, APIView):
    @extend_schema(
        request=None, responses={200: ObjectsResultSerializer, **errors(400, 409, 410, 503, 504)},
        summary="Forget every prompt and object",
    )
    async def post(self, request: Request, session_id: str) -> Response:
        session = await sync_to_async(self.get_session)(request, session_id)
        return Response(await commands.session_edit(session=session, kind="reset"))


class SessionPropagateView(SessionViewMixin, APIView):
    @extend_schema(
        request=PropagateSerializer, responses={202: PropagationStartedSerializer, **errors(409, 410, 503, 504)},
        summary="Propagate (results stream over the websocket)",
        examples=[OpenApiExample("Forward from the first frame", value={"direction": "forward", "start_frame": 0}, request_only=True)],
    )
    async def post(self, request: Request, session_id: str) -> Response:
        session = await sync_to_async(self.get_session)(request, session_id)
        data = await sync_to_async(validated)(PropagateSerializer, request.data)
        propagation = await commands.session_propagate(
            session=session, direction=data["direction"], start_frame=data.get("start_frame"),
            max_frames=data.get("max_frames"), resume=data["resume"],
        )
        return Response({"propagation": propagation}, status=status.HTTP_202_ACCEPTED)


class SessionCancelView(SessionViewMixin, APIView):
    @extend_schema(
        request=None, responses={202: CancelResultSerializer, **errors(400, 409, 410, 503, 504)},
        summary="Cancel the running propagation",
    )
    async def post(self, request: Request, session_id: str) -> Response:
        session = await sync_to_async(self.get_session)(request, session_id)
        return Response(await commands.session_cancel(session=session), status=status.HTTP_202_ACCEPTED)


class SessionFramesView(SessionViewMixin, APIView):
    """Stored per-frame results, in frame order (everything propagation produced, even if no one listened)."""

    @extend_schema(
        operation_id="v1_sessions_frames_list",
        responses={200: PaginatedFrameResultListSerializer, **errors(410)},
        parameters=[
            OpenApiParameter("from_frame", int, description="Only frames from this index on (digits; anything else is ignored)."),
            *PAGINATION_PARAMETERS,
        ],
    )
    async def get(self, request: Request, session_id: str) -> Response:
        def page() -> Response:
            session = self.get_session(request, session_id)
            rows = selectors.frame_results(session=session)
            if (start := request.query_params.get("from_frame", "")).isdigit():
                rows = rows.filter(frame_index__gte=int(start))
            paginator = BoundedLimitOffsetPagination(default_limit=20)
            chosen = paginator.paginate_queryset(rows, request, view=self)
            try:
                results = [services.frame_result_read(row) for row in chosen or []]  # None only without a limit
            except FileNotFoundError:  # closed or expired while being read: its files went first
                self.get_session(request, session_id)
                raise
            return paginator.get_paginated_response(results)

        return await sync_to_async(page)()


class SessionTicketView(SessionViewMixin, APIView):
    """A single-use websocket ticket for browsers, which cannot send headers on websockets:
    connect to ``/ws/sessions/<id>/?ticket=...`` within 60 s."""

    @extend_schema(request=None, responses={201: TicketSerializer, **errors(410)})
    async def post(self, request: Request, session_id: str) -> Response:
        session = await sync_to_async(self.get_session)(request, session_id)
        ticket = secrets.token_urlsafe(24)
        await sync_to_async(cache.set)(
            ticket_cache_key(ticket), {"user_id": request.user.pk, "session_id": str(session.pk)}, TICKET_SECONDS
        )
        return Response({"ticket": ticket, "expires_in": TICKET_SECONDS}, status=status.HTTP_201_CREATED)
