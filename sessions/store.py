"""The sessions app's side of :class:`inference.session_store.SessionStore`: what a model worker may
read and write about session records, as services and selectors of this app."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from inference.session_store import LoggedPrompt, OpenSession, ReplayPlan
from sessions import events, selectors, services
from sessions.models import VideoSession


class DatabaseSessionStore:
    def open_sessions(self) -> list[OpenSession]:
        return [OpenSession(str(pk), worker) for pk, worker in selectors.open_sessions().values_list("pk", "worker")]

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

    def claim(self, *, session_id: str, from_worker: str, to_worker: str, to_queue: str) -> bool:
        return services.session_claim(session_id=session_id, from_worker=from_worker, to_worker=to_worker, to_queue=to_queue)

    def set_status(self, *, session_id: str, status: str, from_statuses: Iterable[str], error: str = "") -> bool:
        return services.session_set_status(session_id=session_id, status=status, from_statuses=from_statuses, error=error)

    def propagation_update(self, *, session_id: str, **changes: Any) -> None:
        services.propagation_update(session_id=session_id, **changes)

    def frame_result_store(self, *, session_id: str, payload: dict[str, Any]) -> bool:
        return services.frame_result_store(session_id=session_id, payload=payload)

    def publish(self, session_id: str, event: dict[str, Any]) -> None:
        events.publish(session_id, event)

    def sweep(self) -> None:
        services.sessions_sweep()
