"""Web side of video sessions: checks, the session record, and commands to the worker holding it."""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.services import quota_for
from inference.gateway import COMMAND_TIMEOUT_SECONDS, SessionTarget, gateway
from inference.legs import Leg, legs_direction, legs_plan, legs_to_resume
from inference.messages import (
    CancelPropagation,
    CloseSession,
    OpenLive,
    OpenSession,
    PromptSession,
    Propagate,
    RemoveObject,
    ResetSession,
    SessionCommand,
    SessionMessage,
    SessionRecovering,
    StatusEvent,
    VideoPrompt,
)
from sam3site.errors import ApiError, Conflict, Gone, InvalidInput, NotFound, RateLimited, Unavailable
from segmentation.prompt_geometry import check_prompt_inside
from sessions import events, selectors, services
from sessions.models import VideoSession
from uploads.models import Upload

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# How long a close waits for the worker to free the session. The record is closed before and the
# files go after regardless; a worker killed a moment ago still looks alive until its heartbeat
# times out, and must not hold the DELETE for long. A live worker that answers late still runs a
# close it has started, and its sweeper (SESSION_CLEANUP_INTERVAL_SECONDS) frees any session no
# longer open.
CLOSE_TIMEOUT_SECONDS = 5
_SESSIONS_LOCK = 730_301  # advisory lock id serialising the session-limit check on Postgres


def _lock_session_limits() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SESSIONS_LOCK])


def _create_record(owner: User, video_id: Any, worker: str, queue: str, live: dict[str, Any] | None = None) -> VideoSession:
    """The session's record, under the server's and the owner's session limits; ``live``: a live
    session's options (it has no video)."""
    video = None if live is not None else Upload.objects.filter(pk=video_id, owner=owner).first()
    if video is None and live is None:
        raise NotFound(f"Upload {video_id} not found.", code="upload_not_found")
    if video is not None and video.kind != Upload.Kind.VIDEO:
        raise InvalidInput(f"Upload {video_id} is an image; sessions need a video.", code="not_a_video")
    with transaction.atomic():
        _lock_session_limits()
        open_sessions = selectors.open_sessions()
        limit = settings.CONFIG.max_concurrent_sessions
        if open_sessions.count() >= limit:
            raise Unavailable(
                f"The server has its maximum of {limit} open sessions (MAX_CONCURRENT_SESSIONS).",
                code="too_many_sessions", retry_after=30,
            )
        own_limit = quota_for(owner).max_concurrent_sessions
        if open_sessions.filter(owner=owner).count() >= own_limit:
            raise RateLimited(
                f"You have your maximum of {own_limit} open sessions; close one first.",
                code="session_quota_exceeded", retry_after=30,
            )
        if video is None:
            return VideoSession.objects.create(
                owner=owner, kind=VideoSession.Kind.LIVE, live=live, worker=worker, worker_queue=queue, frame_count=0, width=0, height=0,
            )
        return VideoSession.objects.create(
            owner=owner, video=video, worker=worker, worker_queue=queue, frame_count=video.frame_count or 0,
            fps=video.fps, width=video.width, height=video.height,
        )


async def send(session: VideoSession, command: SessionCommand, *, timeout: float = COMMAND_TIMEOUT_SECONDS) -> dict[str, Any]:
    target = SessionTarget(
        session_id=str(session.pk), worker=session.worker, queue=session.worker_queue,
        recovering=session.status == VideoSession.Status.RECOVERING,
    )
    return await gateway().session_command(target, SessionMessage(str(session.pk), command), timeout=timeout)


async def session_open(*, owner: User, video_id: Any = None, live: dict[str, Any] | None = None) -> VideoSession:
    """Open a session on an uploaded video, or with ``live`` options ({"store", "mask_format"}) a live one."""
    if not settings.CONFIG.video_model_enabled:
        raise Unavailable("Video sessions are off (VIDEO_MODEL_ENABLED=False).", code="video_disabled")
    load = await sync_to_async(selectors.open_sessions_per_worker)()
    worker, queue = await gateway().session_worker(load)
    session = await sync_to_async(_create_record)(owner, video_id, worker, queue, live)
    if live is not None:
        opening: SessionCommand = OpenLive(**live, epoch=session.owner_epoch)
    else:
        assert session.video is not None  # _create_record found it
        opening = OpenSession(str(session.video.path), epoch=session.owner_epoch)
    try:
        opened = await send(session, opening)
    except ApiError as error:
        await sync_to_async(services.session_set_status)(
            session_id=str(session.pk), status=VideoSession.Status.FAILED, error=error.message,
            from_statuses=[VideoSession.Status.STARTING],
        )
        raise
    ready = await sync_to_async(services.session_set_status)(
        session_id=str(session.pk), status=VideoSession.Status.READY, frame_count=opened["frame_count"],
        from_statuses=[VideoSession.Status.STARTING],
    )
    await sync_to_async(session.refresh_from_db)()
    if not ready and not session.is_open:  # closed while it was being opened: the worker must not keep it
        with suppress(ApiError):
            await send(session, CloseSession(), timeout=CLOSE_TIMEOUT_SECONDS)
        require_open(session)
    return session


def require_open(session: VideoSession) -> None:
    """An ended session (closed, expired, failed) keeps only its record: 410 with code
    ``session_<status>`` for everything but reading the record and closing it again."""
    if not session.is_open:
        raise Gone(
            f"The session is {session.status}; only its record remains (GET /api/v1/sessions/{session.pk}/).",
            code=f"session_{session.status}", detail={"status": session.status},
        )


def _require_state(session: VideoSession, *allowed: str) -> None:
    require_open(session)
    if session.status in allowed:
        return
    if session.status == VideoSession.Status.RECOVERING:
        raise SessionRecovering(retry_after=services.RECOVERY_RETRY_AFTER_SECONDS)
    raise Conflict(f"The session is {session.status}; wait for it or cancel the propagation.", code="session_busy")


async def session_prompt(*, session: VideoSession, prompt: dict[str, Any]) -> dict[str, Any]:
    _require_state(session, VideoSession.Status.READY)
    if session.kind == VideoSession.Kind.LIVE:
        pass  # ``frame`` is a pushed frame's seq; the worker knows which frames it kept, and their size
    elif not 0 <= prompt["frame"] < session.frame_count:
        raise InvalidInput(
            f"Frame {prompt['frame']} is outside the video (0..{session.frame_count - 1}).", code="frame_out_of_range"
        )
    else:
        check_prompt_inside(prompt, session.width, session.height)
    result = await send(session, PromptSession(VideoPrompt.from_payload(prompt)))
    # Logged as given: replaying the log in order gives new objects the same ids again.
    await sync_to_async(services.prompt_log_append)(session=session, kind=prompt["kind"], frame_index=prompt["frame"], payload=prompt)
    return result


async def session_edit(*, session: VideoSession, kind: str, object_id: int | None = None) -> dict[str, Any]:
    _require_state(session, VideoSession.Status.READY)
    command: SessionCommand = ResetSession() if object_id is None else RemoveObject(object_id)
    result = await send(session, command)
    payload = {"object_id": object_id} if object_id is not None else {}
    await sync_to_async(services.prompt_log_append)(session=session, kind=kind, frame_index=None, payload=payload)
    return result


async def session_propagate(
    *, session: VideoSession, direction: str, start_frame: int | None, max_frames: int | None, resume: bool
) -> dict[str, Any]:
    _require_state(session, VideoSession.Status.READY)
    if session.kind == VideoSession.Kind.LIVE:
        raise Conflict("A live session computes the frames you push; it does not propagate.", code="live_session")
    previous = session.propagation
    if resume:
        legs = legs_to_resume(previous, session.frame_count)
    else:
        start_frame = 0 if start_frame is None else start_frame
        if not 0 <= start_frame < session.frame_count:
            raise InvalidInput(
                f"start_frame {start_frame} is outside the video (0..{session.frame_count - 1}).", code="frame_out_of_range"
            )
        legs = legs_plan(direction, start_frame, max_frames)
    propagation = _propagation_record(legs, resume=resume)
    started = await sync_to_async(services.session_set_status)(
        session_id=str(session.pk), status=VideoSession.Status.PROPAGATING, propagation=propagation,
        from_statuses=[VideoSession.Status.READY],
    )
    if not started:  # another request started one (or closed the session) since this one looked
        await sync_to_async(session.refresh_from_db)()
        _require_state(session, VideoSession.Status.READY)
        raise Conflict("The session changed meanwhile; try again.", code="session_busy")
    try:
        await send(session, Propagate(legs))
    except ApiError:  # refused (nothing to propagate, worker lost...): as if it had not been asked
        await sync_to_async(services.session_set_status)(
            session_id=str(session.pk), status=VideoSession.Status.READY, propagation=previous,
            from_statuses=[VideoSession.Status.PROPAGATING],
        )
        raise
    return propagation


def _propagation_record(legs: list[Leg], *, resume: bool) -> dict[str, Any]:
    """The propagation as the session record keeps it; ``legs`` is exactly what runs (a resumed
    propagation may be the rest of a forward leg and then a whole backward one)."""
    return {
        "direction": legs_direction(legs), "start_frame": legs[0].first, "max_frames": legs[0].max_frames,
        "legs": [leg.as_json() for leg in legs], "state": "running", "frames_done": 0, "last_frame": None,
        "started_at": timezone.now().isoformat(), "finished_at": None, "resumed": resume,
    }


async def session_cancel(*, session: VideoSession) -> dict[str, Any]:
    require_open(session)
    if session.status != VideoSession.Status.PROPAGATING:
        raise Conflict("No propagation is running.", code="not_propagating")
    return await send(session, CancelPropagation())


async def session_close(*, session: VideoSession) -> None:
    """Close: the record first (every later request sees the session ended and no late writer
    can reopen it), then the worker's memory (cancelling a running propagation), then the files.
    Closing an ended session again changes nothing (an expired one stays expired)."""
    closed = await sync_to_async(services.session_set_status)(
        session_id=str(session.pk), status=VideoSession.Status.CLOSED, from_statuses=VideoSession.OPEN_STATUSES
    )
    if closed:
        with suppress(ApiError):  # a lost worker holds nothing any more; the record is what matters
            await send(session, CloseSession(), timeout=CLOSE_TIMEOUT_SECONDS)
    await sync_to_async(services.session_files_remove)(session=session)
    if closed:
        events.publish(str(session.pk), StatusEvent(VideoSession.Status.CLOSED).to_message())
