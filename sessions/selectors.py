from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Count, Max, QuerySet

from sessions.models import FrameResult, SessionPrompt, VideoSession

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def sessions_of(*, owner: User) -> QuerySet[VideoSession]:
    return VideoSession.objects.filter(owner=owner).select_related("video")


def open_sessions() -> QuerySet[VideoSession]:
    return VideoSession.objects.filter(status__in=VideoSession.OPEN_STATUSES)


def open_sessions_per_worker() -> dict[str, int]:
    rows = open_sessions().values("worker").annotate(count=Count("id"))
    return {row["worker"]: row["count"] for row in rows}


def prompt_log(*, session: VideoSession) -> list[SessionPrompt]:
    return list(SessionPrompt.objects.filter(session=session).order_by("sequence"))


def frame_results(*, session: VideoSession) -> QuerySet[FrameResult]:
    return FrameResult.objects.filter(session=session).order_by("frame_index")


def next_unstored_frame(*, session: VideoSession) -> int:
    """The frame number after the last stored result (0 when none is)."""
    last = frame_results(session=session).aggregate(last=Max("frame_index"))["last"]
    return 0 if last is None else last + 1
