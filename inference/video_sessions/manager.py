"""Video sessions inside a model worker: live state, commands, propagation, recovery, sweeping.

Commands run on the model thread (the runtime's scheduler), so they never race the image jobs
or each other; a propagation is a stream that yields after every frame, so other sessions and
image requests interleave with it. The model thread only computes: frame results, progress,
the final status and the events go to the worker's writer thread (:mod:`.writer`), in order.
Session records are reached through :class:`inference.session_store.SessionStore`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from loguru import logger

from inference import registry
from inference.live_frames import LiveFrame
from inference.messages import (
    CancelPropagation,
    CloseSession,
    FrameEvent,
    LiveFrameError,
    OpenLive,
    OpenSession,
    ProgressEvent,
    PromptSession,
    Propagate,
    PropagationEnded,
    RemoveObject,
    ResetSession,
    SessionCommand,
    SessionMessage,
    StatusEvent,
    VideoPrompt,
)
from inference.runtime.video import set_temporal_disambiguation
from inference.runtime_process import ModelRuntime
from inference.session_store import FAILED, PROPAGATING, READY, RECOVERING, ReplayPlan, session_store
from inference.video_sessions.encoding import frame_payload
from inference.video_sessions.live import FrameObjects, LiveSession
from inference.video_sessions.stream_reader import StreamReader
from inference.video_sessions.streaming import FramePump, MemorySlots, RedisSlots, StreamSession, live_frame_event
from inference.video_sessions.writer import ResultWriter
from sam3site import redis_clients
from sam3site.errors import Conflict, InvalidInput, NotFound

WATCHDOG_SECONDS = 0.5  # with the 1 s heartbeat and its 4 s timeout: a lost worker is noticed within 5 s
PROGRESS_EVERY_FRAMES = 5
DRAIN_SECONDS = 10.0  # an ended stream's last frame is answered before the session ends, if it comes this soon

_manager: SessionManager | None = None


class SessionManager:
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.live: dict[str, LiveSession | StreamSession] = {}
        self.answered: dict[str, int] = {}  # live sessions: the last seq answered (computed or refused)
        self.writer = ResultWriter()
        # Live sessions' frames: left by the web in slots (Redis, or this process's memory on the embedded default).
        self.slots = RedisSlots(runtime.queue) if runtime.queue is not None else MemorySlots()
        self.pump = FramePump(self.slots, self._compute_live_frame, self._deliver_live_frame, self._refuse_live_frame)
        self._stop = threading.Event()
        self._configured = False
        runtime.session_count = lambda: len(self.live)

    # --- commands (from the Celery task thread, or the in-process gateway) ---

    def execute(self, message: SessionMessage) -> Future:
        command, session_id = message.command, message.session_id
        if isinstance(command, CloseSession) and (live := self.live.get(session_id)) is not None:
            live.cancel.set()  # now, not after the running propagation's next frame: close wins over it
        if isinstance(command, CancelPropagation):
            done: Future = Future()
            live = self.live.get(session_id)
            if live is not None:
                live.cancel.set()
            done.set_result({"cancelling": live is not None})
            return done
        return self.runtime.scheduler.call(lambda: self._apply(session_id, command))

    def _live(self, session_id: str) -> LiveSession | StreamSession:
        live = self.live.get(session_id)
        if live is None:
            raise NotFound("The session is not loaded on its worker (it is being recovered).", code="session_not_loaded")
        return live

    def _loaded(self):  # noqa: ANN202
        loaded = self.runtime.host.require_ready()
        if not self._configured:
            set_temporal_disambiguation(loaded, settings.CONFIG.video_model_temporal_disambiguation)
            threshold = settings.CONFIG.video_detection_threshold
            if threshold is not None:
                loaded.model.score_threshold_detection = threshold
                loaded.model.new_det_thresh = threshold
            self._configured = True
        return loaded

    def _apply(self, session_id: str, command: SessionCommand) -> dict[str, Any]:
        if isinstance(command, OpenSession):
            if session_id not in self.live:
                self.live[session_id] = LiveSession(self._loaded(), Path(command.video_path))
            opened = self.live[session_id]
            return {"frame_count": opened.frame_count if isinstance(opened, LiveSession) else 0}
        if isinstance(command, OpenLive):
            if session_id not in self.live:
                opened = self.live[session_id] = StreamSession(
                    self._loaded(), store=command.store, mask_format=command.mask_format, first_frame=command.first_frame
                )
                if command.source_url:
                    opened.reader = self._stream_reader(session_id, command.source_url, first_seq=command.first_frame)
                    opened.reader.start()
            return {"frame_count": 0}
        if isinstance(command, CloseSession):
            live = self.live.pop(session_id, None)
            self.slots.discard(session_id)
            self.answered.pop(session_id, None)
            if live is not None:
                live.cancel.set()
                live.close()
            return {"closed": live is not None}
        live = self._live(session_id)
        if isinstance(command, RemoveObject):
            live.remove_object(command.object_id)
            return {"removed": command.object_id, "objects": live.object_ids()}
        if isinstance(command, ResetSession):
            live.reset()
            return {"objects": []}
        if isinstance(command, PromptSession):
            return live.prompt(command.prompt) if isinstance(live, StreamSession) else self._prompt(live, command.prompt)
        if isinstance(command, Propagate):  # checked here, on the model thread; the frames then stream
            if isinstance(live, StreamSession):
                raise Conflict("A live session computes the frames it is sent; it does not propagate.", code="live_session")
            frames = live.propagation(command.legs)
            live.cancel.clear()
            self.runtime.scheduler.submit_stream(self._propagation(session_id, live, frames))
            return {"accepted": True}
        raise ValueError(f"unknown session command {command!r}")

    # --- live sessions' frames: taken by the pump thread, computed here, delivered by the writer ---

    def _compute_live_frame(self, session_id: str, frame: LiveFrame, image: Any) -> dict[str, Any] | None:
        def compute() -> dict[str, Any] | None:
            live = self.live.get(session_id)
            return live.push(frame, image) if isinstance(live, StreamSession) else None  # closed meanwhile: nobody wants it

        return self.runtime.scheduler.call(compute).result()

    def _deliver_live_frame(self, session_id: str, result: dict[str, Any]) -> None:
        live = self.live.get(session_id)
        store_it = isinstance(live, StreamSession) and live.store

        def write() -> None:
            store = session_store()
            if store_it and not store.frame_result_store(session_id=session_id, payload=result):
                return  # the session ended meanwhile
            store.publish(session_id, live_frame_event(result))

        self.writer.submit(write)
        self.answered[session_id] = result["seq"]

    def _stream_reader(self, session_id: str, url: str, *, first_seq: int) -> StreamReader:
        def publish(event: dict[str, Any]) -> None:
            self.writer.submit(lambda: session_store().publish(session_id, event))

        def end(status: str, message: str, last_seq: int | None) -> None:
            """On the reader's thread: once the frames read are answered, end the session (compare-and-set
            from ready; a session still being opened becomes ready within moments, so that is waited for)."""
            deadline = time.monotonic() + DRAIN_SECONDS
            while last_seq is not None and self.answered.get(session_id, -1) < last_seq and time.monotonic() < deadline:
                time.sleep(0.05)
            while True:
                moved: Future = Future()  # the writer ends it: after the frames it is publishing

                def write(moved: Future = moved) -> None:
                    store = session_store()
                    moved.set_result(store.set_status(session_id=session_id, status=status, error=message, from_statuses=[READY]))
                    if moved.result():
                        store.publish(session_id, StatusEvent(status, message=message).to_message())

                self.writer.submit(write)
                try:
                    if moved.result(timeout=DRAIN_SECONDS) or time.monotonic() > deadline:
                        break
                except TimeoutError:  # the write failed (logged by the writer)
                    break
                time.sleep(0.1)
            self.execute(SessionMessage(session_id, CloseSession()))

        return StreamReader(
            session_id, url, allowlist=settings.CONFIG.stream_url_allowlist,
            put=lambda frame: self.slots.put(session_id, frame), publish=publish, end=end, first_seq=first_seq,
        )

    def _refuse_live_frame(self, session_id: str, error: LiveFrameError) -> None:
        self.writer.submit(lambda: session_store().publish(session_id, error.to_message()))
        self.answered[session_id] = error.seq

    def _prompt(self, live: LiveSession, prompt: VideoPrompt) -> dict[str, Any]:
        try:
            return self._apply_prompt(live, prompt)
        except ValueError as error:  # the engine's own prompt checks (e.g. prompt_too_long), as for images
            raise InvalidInput(str(error), code=getattr(error, "code", "invalid_prompt")) from None

    def _apply_prompt(self, live: LiveSession, prompt: VideoPrompt) -> dict[str, Any]:
        frame = prompt.frame
        if prompt.kind == "text":
            return frame_payload(frame, [live.add_text(frame, prompt.text or "")])
        if prompt.kind == "exemplar":
            threshold = prompt.threshold if prompt.threshold is not None else settings.CONFIG.image_model_confidence_threshold
            instances = live.add_exemplars(frame, prompt.boxes, prompt.box_labels, prompt.text, threshold)
            return frame_payload(frame, [instances])
        object_id, instances = live.add_points(frame, prompt.object_id, prompt.points, prompt.point_labels, prompt.box)
        return {**frame_payload(frame, [instances]), "object_id": object_id}

    # --- propagation: computed here, stored and published by the writer thread ---

    def _propagation(self, session_id: str, live: LiveSession, frames: Iterator[FrameObjects | None]) -> Generator[None, None, None]:
        store, writer = session_store(), self.writer
        done, last_frame = 0, None
        state, error = "done", ""
        writer.submit(lambda: store.publish(session_id, StatusEvent(PROPAGATING).to_message()))
        try:
            while True:
                if live.cancel.is_set():  # before computing the next step: a closed session's frames are not wanted
                    state = "cancelled"
                    break
                try:
                    item = next(frames)
                except StopIteration:
                    break
                if item is None:
                    yield
                    continue
                payload = frame_payload(item.frame, item.instances)
                done, last_frame = done + 1, item.frame
                writer.submit(_frame_writer(session_id, payload, done if done % PROGRESS_EVERY_FRAMES == 0 else None))
                yield
        except Exception as failure:  # noqa: BLE001 - reported to the client, the worker goes on
            logger.exception("Propagation of session {} failed", session_id)
            state, error = "failed", f"{type(failure).__name__}: {failure}"
        finally:
            writer.submit(_end_writer(session_id, state, error, done, last_frame))

    # --- lifetime: recovery of orphaned sessions, sweeping ---

    def start(self) -> None:
        if self.runtime.queue is not None and registry.serves_video(self.runtime.device):
            threading.Thread(target=self._watch_orphans, name="session-watchdog", daemon=True).start()
        threading.Thread(target=self._sweep_periodically, name="session-sweeper", daemon=True).start()
        self.pump.start()

    def stop(self) -> None:
        self._stop.set()
        self.pump.stop()
        self.writer.stop()

    def _watch_orphans(self) -> None:
        client = redis_clients.client()
        while not self._stop.wait(WATCHDOG_SECONDS):
            if not self.runtime.host.ready:
                continue
            try:
                store = session_store()
                alive = {w.name for w in registry.read_workers(client) if w.alive} | {self.runtime.name}
                for orphan in [s for s in store.open_sessions() if s.worker not in alive]:
                    if store.claim(
                        session_id=orphan.session_id, from_worker=orphan.worker, to_worker=self.runtime.name,
                        to_queue=self.runtime.queue or "",
                    ):
                        self._recover(orphan.session_id, orphan.worker)
            except Exception:  # noqa: BLE001 - the watchdog must keep watching
                logger.exception("Session watchdog failed")
            finally:
                close_old_connections()

    def _recover(self, session_id: str, dead_worker: str) -> None:
        logger.warning("Worker {} is gone; rebuilding session {} here", dead_worker, session_id)
        store = session_store()
        store.publish(session_id, StatusEvent(RECOVERING, lost_worker=dead_worker).to_message())
        try:
            plan = store.replay_plan(session_id)
            if plan.propagation_running:
                store.propagation_update(session_id=session_id, state="interrupted")
            notice = self.runtime.scheduler.call(lambda: self._replay(session_id, plan)).result()
        except Exception as failure:  # noqa: BLE001
            logger.exception("Session {} could not be rebuilt", session_id)
            if store.set_status(session_id=session_id, status=FAILED, error=str(failure), from_statuses=[RECOVERING]):
                store.publish(session_id, StatusEvent(FAILED, message=str(failure)).to_message())
            self.execute(SessionMessage(session_id, CloseSession()))
            return
        if not store.set_status(
            session_id=session_id, status=READY, from_statuses=[RECOVERING]
        ):  # closed or expired while being rebuilt: nothing to keep
            logger.info("Session {} ended while being rebuilt; its state is let go", session_id)
            self.execute(SessionMessage(session_id, CloseSession()))
            return
        store.publish(session_id, StatusEvent(READY, recovered=True, message=notice).to_message())

    def _replay(self, session_id: str, plan: ReplayPlan) -> str | None:
        """Rebuild the live state from the prompt log, in order (on the model thread); what the client
        should know about the rebuilt session, if anything."""
        if plan.live is not None:
            return self._replay_live(session_id, plan)
        self._apply(session_id, OpenSession(plan.video_path))
        for entry in plan.prompts:
            if entry.kind == "remove_object":
                self._apply(session_id, RemoveObject(int(entry.payload["object_id"])))
            elif entry.kind == "reset":
                self._apply(session_id, ResetSession())
            else:
                live = self.live[session_id]
                assert isinstance(live, LiveSession)  # opened from the video just above
                self._prompt(live, VideoPrompt.from_payload(entry.payload))
        return None

    def _replay_live(self, session_id: str, plan: ReplayPlan) -> str | None:
        """A live session goes on from its next frame with its text prompts. Clicks and boxes named
        frames that were only on the lost worker, so their objects cannot be rebuilt."""
        assert plan.live is not None
        self._apply(session_id, OpenLive(**{**plan.live, "first_frame": plan.next_frame}))
        clicked = False
        for entry in plan.prompts:
            if entry.kind == "reset":
                self._apply(session_id, ResetSession())
                clicked = False
            elif entry.kind == "text":
                self._apply(session_id, PromptSession(VideoPrompt.from_payload(entry.payload)))
            else:
                clicked = clicked or entry.kind == "points"
        if clicked:
            return "The objects you designated with points or boxes were lost with the worker: designate them again."
        return None

    def _sweep_periodically(self) -> None:
        while not self._stop.wait(settings.CONFIG.session_cleanup_interval_seconds):
            try:
                store = session_store()
                store.sweep()
                still_here = {s.session_id for s in store.open_sessions() if s.worker == self.runtime.name}
                for session_id in [s for s in self.live if s not in still_here]:
                    self.execute(SessionMessage(session_id, CloseSession()))
            except Exception:  # noqa: BLE001
                logger.exception("Session sweep failed")
            finally:
                close_old_connections()


def _frame_writer(session_id: str, payload: dict[str, Any], progress_at: int | None):  # noqa: ANN202
    def write() -> None:
        store = session_store()
        if not store.frame_result_store(session_id=session_id, payload=payload):
            return  # the session ended meanwhile: its frames are no longer wanted
        store.publish(session_id, FrameEvent(payload["frame"], payload["objects"]).to_message())
        if progress_at is not None:
            store.propagation_update(session_id=session_id, frames_done=progress_at, last_frame=payload["frame"])
            store.publish(session_id, ProgressEvent(progress_at, payload["frame"]).to_message())

    return write


def _end_writer(session_id: str, state: str, error: str, done: int, last_frame: int | None):  # noqa: ANN202
    def write() -> None:
        store = session_store()
        store.propagation_update(
            session_id=session_id, state=state, frames_done=done, last_frame=last_frame,
            finished_at=timezone.now().isoformat(), **({"error": error} if error else {}),
        )
        # Only a propagating session becomes ready again: a session closed meanwhile stays closed.
        ready = store.set_status(session_id=session_id, status=READY, from_statuses=[PROPAGATING])
        outcome: Literal["done", "cancelled", "error"] = "done" if state == "done" else ("cancelled" if state == "cancelled" else "error")
        store.publish(session_id, PropagationEnded(outcome, done, error or None).to_message())
        if ready:
            store.publish(session_id, StatusEvent(READY).to_message())

    return write


def start_manager(runtime: ModelRuntime) -> SessionManager:
    global _manager
    if _manager is None:
        _manager = SessionManager(runtime)
        _manager.start()
    return _manager


def current_manager() -> SessionManager | None:
    return _manager


def require_manager() -> SessionManager:
    if _manager is None:
        raise Conflict("This process hosts no model (start workers with manage.py run_workers).", code="no_model_here")
    return _manager
