"""Writes about video sessions: their records, prompt log, stored frame results and lifetime."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from loguru import logger

from inference.messages import StatusEvent
from inference.stream_urls import resolve_redirects
from sessions import events
from sessions.models import FrameResult, SessionPrompt, VideoSession

SESSIONS_DIR_NAME = "sessions"


def session_output_dir(session_id: str) -> Path:
    return Path(settings.OUTPUT_DIR) / SESSIONS_DIR_NAME / str(session_id)


def session_touch(*, session_id: str) -> None:
    VideoSession.objects.filter(pk=session_id).update(last_activity_at=timezone.now())


def session_set_status(
    *, session_id: str, status: str, from_statuses: Iterable[str], error: str = "", **fields: Any
) -> bool:
    """Compare-and-set: move the session to ``status`` only if it is in one of ``from_statuses``
    (so a late writer cannot undo a close or an expiry). True when it moved."""
    updates: dict[str, Any] = {"status": status, "last_activity_at": timezone.now(), **fields}
    if error:
        updates["error"] = error
    if status in (VideoSession.Status.CLOSED, VideoSession.Status.EXPIRED):
        updates["closed_at"] = timezone.now()
    return VideoSession.objects.filter(pk=session_id, status__in=list(from_statuses)).update(**updates) == 1


def stream_url_check(*, url: str) -> str:
    """A live session's stream URL, once it and every redirect it leads through are allowed (SSRF);
    InvalidInput (400 ``stream_url_refused``, ``unsupported_scheme``...) otherwise. The worker checks
    again before each connection: DNS and redirects may change meanwhile."""
    resolve_redirects(url, settings.CONFIG.stream_url_allowlist)
    return url.strip()


def prompt_log_append(*, session: VideoSession, kind: str, frame_index: int | None, payload: dict[str, Any]) -> SessionPrompt:
    with transaction.atomic():
        last = SessionPrompt.objects.filter(session=session).aggregate(last=Max("sequence"))["last"]
        entry = SessionPrompt.objects.create(
            session=session, sequence=(last or 0) + 1, kind=kind, frame_index=frame_index, payload=payload
        )
        VideoSession.objects.filter(pk=session.pk).update(last_activity_at=timezone.now())
    return entry


def frame_result_store(*, session_id: str, payload: dict[str, Any]) -> bool:
    """Write a frame's objects under OUTPUT_DIR (atomically) and index it in the database, unless the
    session has ended meanwhile. Holds the session row's lock, as :func:`session_files_remove` does, so
    a frame is either stored before the session's files are removed (and removed with them) or not at all."""
    frame = payload["frame"]
    with transaction.atomic():
        session = VideoSession.objects.select_for_update().filter(pk=session_id).only("status", "files_removed").first()
        if session is None or not session.is_open or session.files_removed:
            return False
        directory = session_output_dir(session_id) / "frames"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{frame:06d}.json"
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(payload, separators=(",", ":")))
        os.replace(partial, path)
        FrameResult.objects.update_or_create(
            session_id=UUID(str(session_id)), frame_index=frame,
            defaults={"object_count": len(payload["objects"]), "path": str(path.relative_to(settings.OUTPUT_DIR))},
        )
    return True


def frame_result_read(result: FrameResult) -> dict[str, Any]:
    return json.loads((Path(settings.OUTPUT_DIR) / result.path).read_text())


def propagation_update(*, session_id: str, **changes: Any) -> dict[str, Any]:
    with transaction.atomic():
        session = VideoSession.objects.select_for_update().get(pk=session_id)
        session.propagation = {**session.propagation, **changes}
        session.last_activity_at = timezone.now()
        session.save(update_fields=["propagation", "last_activity_at"])
    return session.propagation


def session_files_remove(*, session: VideoSession) -> None:
    """Delete an ended session's results: the files and their index (rows must not outlive the files)."""
    with transaction.atomic():
        VideoSession.objects.filter(pk=session.pk).update(files_removed=True)  # the row lock orders it with stores
        FrameResult.objects.filter(session_id=session.pk).delete()
        shutil.rmtree(session_output_dir(str(session.pk)), ignore_errors=True)


def session_claim(*, session_id: str, from_worker: str, to_worker: str, to_queue: str) -> bool:
    """Take over a session whose worker died; exactly one claimant wins."""
    claimed = VideoSession.objects.filter(
        pk=session_id, worker=from_worker, status__in=VideoSession.OPEN_STATUSES
    ).update(worker=to_worker, worker_queue=to_queue, status=VideoSession.Status.RECOVERING, last_activity_at=timezone.now())
    return claimed == 1


def sessions_sweep(*, dry_run: bool = False, now: dt.datetime | None = None) -> dict[str, list[str]]:
    """Expire idle sessions and delete the files of ended ones. Idempotent; safe from cron and workers.

    Each expiry is a compare-and-set (a session used or closed meanwhile is left alone) and is
    told to the session's websocket clients."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.CONFIG.session_timeout_seconds)
    idle = VideoSession.objects.filter(status__in=VideoSession.OPEN_STATUSES, last_activity_at__lt=cutoff)
    candidates = [str(pk) for pk in idle.values_list("pk", flat=True)]
    ended = VideoSession.objects.exclude(status__in=VideoSession.OPEN_STATUSES).filter(files_removed=False)
    to_clean = [str(pk) for pk in ended.values_list("pk", flat=True)]
    if dry_run:
        return {"expired": candidates, "cleaned": sorted(set(candidates) | set(to_clean))}
    expired = [
        pk for pk in candidates
        if idle.filter(pk=pk).update(status=VideoSession.Status.EXPIRED, closed_at=now) == 1
    ]
    for session_id in expired:
        events.publish(session_id, StatusEvent(VideoSession.Status.EXPIRED).to_message())
    for session in VideoSession.objects.filter(pk__in=[*expired, *to_clean]):
        session_files_remove(session=session)
    if expired or to_clean:
        logger.info("Session sweep: expired {}, cleaned {}", len(expired), len(set(expired) | set(to_clean)))
    return {"expired": expired, "cleaned": sorted(set(expired) | set(to_clean))}
