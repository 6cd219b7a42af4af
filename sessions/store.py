"""The sessions app's side of :class:`inference.session_store.SessionStore`: what a model worker may
read and write about session records, as services and selectors of this app."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections
from loguru import logger

from inference.session_store import LoggedPrompt, OpenSession, ReplayPlan, SessionFenced
from sessions import events, selectors, services
from sessions.models import VideoSession

WRITE_ATTEMPTS = 3
T = TypeVar("T")


def _retried(write: Callable[[], T]) -> T:
    """A worker's write to the session records, tried again after a dropped connection or a lock
    wait that timed out. Each is idempotent (an upsert, a merge, a compare-and-set against the
    epoch); given up, it would lose a frame or leave a session propagating for ever."""
    for attempt in range(1, WRITE_ATTEMPTS):
        try:
            return write()
        except (OperationalError, InterfaceError) as error:
            logger.warning("Session write failed, trying again: {!r}", error)
            close_old_connections()  # a broken connection is closed, and the next attempt takes another
            time.sleep(0.5 * attempt)
    return write()


class DatabaseSessionStore:
    def open_sessions(self) -> list[OpenSession]:
        rows = selectors.open_sessions().values_list("pk", "worker", "owner_epoch")
        return [OpenSession(str(pk), worker, epoch) for pk, worker, epoch in rows]

    def replay_plan(self, session_id: str) -> ReplayPlan:
        session = VideoSession.objects.select_related("video").get(pk=session_id)
        prompts = [LoggedPrompt(entry.kind, entry.payload) for entry in selectors.prompt_log(session=session)]
        if session.video is None:
            return ReplayPlan(
                video_path="", propagation_running=False, prompts=prompts, live=dict(session.live),
                next_frame=selectors.next_unstored_frame(session=session),
            )
        return ReplayPlan(
            video_path=str(session.video.path), propagation_running=session.propagation.get("state") == "running", prompts=prompts,
        )

    def claim(self, *, session_id: str, from_worker: str, from_epoch: int, to_worker: str, to_queue: str) -> int | None:
        return services.session_claim(
            session_id=session_id, from_worker=from_worker, from_epoch=from_epoch, to_worker=to_worker, to_queue=to_queue,
        )

    def set_status(self, *, session_id: str, status: str, from_statuses: Iterable[str], epoch: int, error: str = "") -> bool:
        return _retried(lambda: services.session_set_status(
            session_id=session_id, status=status, from_statuses=from_statuses, error=error, epoch=epoch,
        ))

    def propagation_update(self, *, session_id: str, epoch: int, **changes: Any) -> None:
        _retried(lambda: services.propagation_update(session_id=session_id, epoch=epoch, **changes))

    def frame_result_store(self, *, session_id: str, epoch: int, payload: dict[str, Any]) -> bool:
        return _retried(lambda: services.frame_result_store(session_id=session_id, epoch=epoch, payload=payload))

    def publish(self, session_id: str, event: dict[str, Any], *, epoch: int) -> None:
        if not events.publish_as_owner(session_id, event, epoch):
            raise SessionFenced(session_id, epoch)

    def sweep(self) -> None:
        services.sessions_sweep()
