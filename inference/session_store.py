"""How a model worker reaches video-session records without importing the web apps.

The worker needs a few things Postgres holds about its sessions: the prompt log to replay, a place
for frame results and propagation progress, compare-and-set status changes, the open-sessions
list (for the watchdog and the sweeper), and a way to tell the session's websocket clients. This
module states that as a :class:`SessionStore`; the ``sessions`` app implements it and registers its
implementation in ``AppConfig.ready()``, so imports point one way: web -> ``inference``.

Web-safe: no model code here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# The session statuses as the record spells them (sessions.models.VideoSession.Status).
STARTING, READY, PROPAGATING, RECOVERING = "starting", "ready", "propagating", "recovering"
CLOSED, EXPIRED, FAILED = "closed", "expired", "failed"
OPEN_STATUSES = (STARTING, READY, PROPAGATING, RECOVERING)
ENDED_STATUSES = (CLOSED, EXPIRED, FAILED)


@dataclass(frozen=True)
class LoggedPrompt:
    kind: str  # text | exemplar | points | remove_object | reset (as the prompt log stores it)
    payload: dict[str, Any]


@dataclass(frozen=True)
class ReplayPlan:
    """What rebuilding a session on another worker needs: its video (a live session: its options) and
    every prompt, in order."""

    video_path: str
    propagation_running: bool
    prompts: list[LoggedPrompt]
    live: dict[str, Any] | None = None  # a live session's OpenLive options
    next_frame: int = 0  # a live session: the number its next computed frame gets (after those stored)


@dataclass(frozen=True)
class OpenSession:
    session_id: str
    worker: str
    epoch: int  # the ownership epoch (fencing token): raised by every claim


class SessionFenced(Exception):
    """A worker wrote or published for a session another worker has claimed since (a newer epoch):
    nothing was written; the worker must let its state of the session go."""

    def __init__(self, session_id: str, epoch: int) -> None:
        super().__init__(f"session {session_id}: epoch {epoch} is no longer the owner's")
        self.session_id, self.epoch = session_id, epoch


class SessionStore(Protocol):
    """A worker's writes carry its ``epoch`` and raise :class:`SessionFenced` when it is no longer
    the session's (compare-and-set, in the write's own transaction or Redis script)."""

    def open_sessions(self) -> list[OpenSession]: ...

    def replay_plan(self, session_id: str) -> ReplayPlan: ...

    def claim(self, *, session_id: str, from_worker: str, from_epoch: int, to_worker: str, to_queue: str) -> int | None:
        """Take over a session whose worker died: exactly one claimant wins and gets the new epoch
        (the status becomes recovering); None for the others."""
        ...

    def set_status(
        self, *, session_id: str, status: str, from_statuses: Iterable[str], epoch: int, error: str = ""
    ) -> bool:
        """Compare-and-set: True when the session was in one of ``from_statuses`` and moved."""
        ...

    def propagation_update(self, *, session_id: str, epoch: int, **changes: Any) -> None: ...

    def frame_result_store(self, *, session_id: str, epoch: int, payload: dict[str, Any]) -> bool:
        """Store a frame's result; False (nothing stored) once the session has ended."""
        ...

    def publish(self, session_id: str, event: dict[str, Any], *, epoch: int) -> None:
        """Tell the session's websocket clients, in order; never blocks for long."""
        ...

    def sweep(self) -> None:
        """Expire idle sessions and remove the files of ended ones."""
        ...


_store: SessionStore | None = None


def register_session_store(store: SessionStore) -> None:
    global _store
    _store = store


def session_store() -> SessionStore:
    if _store is None:
        raise RuntimeError("No SessionStore registered (the sessions app registers one in its AppConfig.ready()).")
    return _store
