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

from inference.messages import SessionRecovering, StatusEvent
from inference.session_store import SessionFenced
from inference.stream_urls import resolve_redirects
from sessions import events
from sessions.models import FrameResult, SessionPrompt, VideoSession

SESSIONS_DIR_NAME = "sessions"
RECOVERY_RETRY_AFTER_SECONDS = 2


def session_output_dir(session_id: str) -> Path:
    return Path(settings.OUTPUT_DIR) / SESSIONS_DIR_NAME / str(session_id)


def session_touch(*, session_id: str) -> None:
    VideoSession.objects.filter(pk=session_id).update(last_activity_at=timezone.now())


def session_set_status(
    *, session_id: str, status: str, from_statuses: Iterable[str], error: str = "", epoch: int | None = None, **fields: Any
) -> bool:
    """Compare-and-set: move the session to ``status`` only if it is in one of ``from_statuses``
    (so a late writer cannot undo a close or an expiry). True when it moved. A model worker passes
    its ``epoch``: SessionFenced when another worker owns the session since."""
    updates: dict[str, Any] = {"status": status, "last_activity_at": timezone.now(), **fields}
    if error:
        updates["error"] = error
    if status in (VideoSession.Status.CLOSED, VideoSession.Status.EXPIRED):
        updates["closed_at"] = timezone.now()
    current = VideoSession.objects.filter(pk=session_id, status__in=list(from_statuses))
    if epoch is None:
        return current.update(**updates) == 1
    if current.filter(owner_epoch=epoch).update(**updates) == 1:
        return True
    _raise_if_fenced(session_id, epoch)
    return False


def _raise_if_fenced(session_id: str, epoch: int) -> None:
    if VideoSession.objects.filter(pk=session_id).exclude(owner_epoch=epoch).exists():
        raise SessionFenced(str(session_id), epoch)


def stream_url_check(*, url: str) -> str:
    """A live session's stream URL, once it and every redirect it leads through are allowed (SSRF);
    InvalidInput (400 ``stream_url_refused``, ``unsupported_scheme``...) otherwise. The worker checks
    again before each connection: DNS and redirects may change meanwhile."""
    resolve_redirects(url, settings.CONFIG.stream_url_allowlist)
    return url.strip()


def prompt_log_append(*, session: VideoSession, kind: str, frame_index: int | None, payload: dict[str, Any]) -> SessionPrompt:
    """Log a prompt the session's worker has applied, unless the session changed owner meanwhile
    (its epoch moved past the one the request saw): the new owner rebuilt the session without it,
    so the client is told to send it again (503 session_recovering, Retry-After)."""
    with transaction.atomic():
        locked = VideoSession.objects.select_for_update().filter(pk=session.pk).only("owner_epoch").first()
        if locked is None or locked.owner_epoch != session.owner_epoch:
            raise SessionRecovering(
                "The session moved to another worker while this prompt was applied; send it again.",
                retry_after=RECOVERY_RETRY_AFTER_SECONDS,
            )
        last = SessionPrompt.objects.filter(session=session).aggregate(last=Max("sequence"))["last"]
        entry = SessionPrompt.objects.create(
            session=session, sequence=(last or 0) + 1, kind=kind, frame_index=frame_index, payload=payload
        )
        VideoSession.objects.filter(pk=session.pk).update(last_activity_at=timezone.now())
    return entry


def frame_result_store(*, session_id: str, epoch: int, payload: dict[str, Any]) -> bool:
    """Store a frame's objects for the session's owner at ``epoch``: False (nothing kept) once the
    session has ended, SessionFenced once another worker owns it.

    The file is written first, under a name of its own epoch, with no lock held; then one short
    transaction (the session row's lock, as :func:`session_files_remove` takes it) checks the
    session and indexes the file. A refused file is deleted, so storage holds only what the
    owner delivered; a replaced one is deleted after the commit."""
    frame = payload["frame"]
    directory = session_output_dir(session_id) / "frames"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{frame:06d}.e{epoch}.json"
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(partial, path)
    relative = str(path.relative_to(settings.OUTPUT_DIR))
    replaced: str | None = None
    with transaction.atomic():
        session = VideoSession.objects.select_for_update().filter(pk=session_id).only("status", "files_removed", "owner_epoch").first()
        refused = session is None or not session.is_open or session.files_removed or session.owner_epoch != epoch
        if not refused:
            key = {"session_id": UUID(str(session_id)), "frame_index": frame}
            previous = FrameResult.objects.filter(**key).values_list("path", flat=True).first()
            replaced = previous if previous and previous != relative else None
            FrameResult.objects.update_or_create(**key, defaults={"object_count": len(payload["objects"]), "path": relative})
    if refused:
        _remove_stray(path)
        if session is not None and session.owner_epoch != epoch:
            raise SessionFenced(str(session_id), epoch)
        return False
    if replaced:
        (Path(settings.OUTPUT_DIR) / replaced).unlink(missing_ok=True)
    return True


def _remove_stray(path: Path) -> None:
    """A refused frame file, and its directories if that leaves them empty (a session whose files were removed)."""
    path.unlink(missing_ok=True)
    for directory in (path.parent, path.parent.parent):
        try:
            directory.rmdir()
        except OSError:  # not empty, or gone
            break


def frame_result_read(result: FrameResult) -> dict[str, Any]:
    return json.loads((Path(settings.OUTPUT_DIR) / result.path).read_text())


def propagation_update(*, session_id: str, epoch: int | None = None, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the propagation record (a model worker passes its ``epoch``: SessionFenced
    when another worker owns the session since)."""
    with transaction.atomic():
        session = VideoSession.objects.select_for_update().get(pk=session_id)
        if epoch is not None and session.owner_epoch != epoch:
            raise SessionFenced(str(session_id), epoch)
        session.propagation = {**session.propagation, **changes}
        session.last_activity_at = timezone.now()
        session.save(update_fields=["propagation", "last_activity_at"])
    return session.propagation


def session_files_remove(*, session: VideoSession) -> None:
    """Delete an ended session's results: their index, then the files (rows must not outlive the
    files). The row lock orders this with :func:`frame_result_store`: a frame indexed before it is
    removed with the others, a frame after it is refused and deleted by its writer."""
    with transaction.atomic():
        VideoSession.objects.filter(pk=session.pk).update(files_removed=True)
        FrameResult.objects.filter(session_id=session.pk).delete()
    shutil.rmtree(session_output_dir(str(session.pk)), ignore_errors=True)


def session_claim(*, session_id: str, from_worker: str, from_epoch: int, to_worker: str, to_queue: str) -> int | None:
    """Take over a session whose worker died; exactly one claimant wins and gets the new epoch.

    The session's events are fenced first (no event of the replaced worker reaches a client from
    here on), then the record moves, by compare-and-set on the worker and epoch the claimant saw."""
    epoch = from_epoch + 1
    events.fence(session_id, epoch)
    claimed = VideoSession.objects.filter(
        pk=session_id, worker=from_worker, owner_epoch=from_epoch, status__in=VideoSession.OPEN_STATUSES
    ).update(
        worker=to_worker, worker_queue=to_queue, owner_epoch=epoch, status=VideoSession.Status.RECOVERING,
        last_activity_at=timezone.now(),
    )
    return epoch if claimed == 1 else None


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
