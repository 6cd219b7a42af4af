"""Video sessions inside a model worker: live state, commands, propagation, recovery, sweeping.

Commands run on the model thread (the runtime's scheduler), so they never race the image jobs
or each other; a propagation is a stream that yields after every frame, so other sessions and
image requests interleave with it. The model thread only computes: frame results, progress,
the final status and the events go to the worker's writer thread (:mod:`.writer`), in order.
Session records are reached through :class:`inference.session_store.SessionStore`.

Ownership (docs/video-sessions.md, "Ownership"): the worker holds each session at an epoch, given
when it opened or claimed it; every write and event for the session carries that epoch, and one
refused (:class:`~inference.session_store.SessionFenced`: another worker claimed the session
since, e.g. while this one was paused or cut off) makes the worker let its state of the session
go at once. The watchdog lets go, too, of sessions the records show owned by another worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.db import OperationalError, close_old_connections
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
from inference.session_store import (
    FAILED,
    PROPAGATING,
    READY,
    RECOVERING,
    ReplayPlan,
    SessionFenced,
    SessionStore,
    session_store,
)
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
        self.epochs: dict[str, int] = {}  # the ownership epoch each session is held at here
        self.fenced: set[tuple[str, int]] = set()  # (session, epoch) another worker has taken over since
        self.writer = ResultWriter(on_fenced=lambda fenced: self._let_go(fenced.session_id, fenced.epoch))
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

    def _forget(self, session_id: str, held: LiveSession | StreamSession | None = None) -> bool:
        """Drop the session's state here (only ``held``, when given: not a newer one). True when there was some."""
        if held is not None and self.live.get(session_id) is not held:
            return False
        live = self.live.pop(session_id, None)
        self.answered.pop(session_id, None)
        if live is not None:
            live.cancel.set()
            live.close()
        return live is not None

    # --- ownership ---

    def _owns(self, session_id: str, epoch: int) -> bool:
        return (session_id, epoch) not in self.fenced

    def _let_go(self, session_id: str, epoch: int) -> None:
        """Another worker owns the session since ``epoch``: no more writes for it, its state goes (any thread)."""
        if (session_id, epoch) in self.fenced or self.epochs.get(session_id) != epoch:
            return
        self.fenced.add((session_id, epoch))
        logger.warning("Session {} was taken over by another worker: epoch {} here is fenced, its state dropped", session_id, epoch)
        held = self.live.get(session_id)
        if held is not None:
            held.cancel.set()  # a running propagation stops before its next frame
            self.runtime.scheduler.call(lambda: self._forget(session_id, held))

    def _write(self, session_id: str, epoch: int, write: Callable[[SessionStore], None]) -> None:
        """Have the writer thread do ``write`` for the session's owner at ``epoch`` (skipped once fenced)."""

        def guarded() -> None:
            if self._owns(session_id, epoch):
                write(session_store())  # SessionFenced reaches the writer, which calls _let_go

        self.writer.submit(guarded)

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
        if isinstance(command, OpenSession | OpenLive) and session_id in self.live and self.epochs.get(session_id) != command.epoch:
            self._forget(session_id)  # held from an earlier ownership: rebuilt at the new epoch
        if isinstance(command, OpenSession):
            if session_id not in self.live:
                self.live[session_id] = LiveSession(self._loaded(), Path(command.video_path))
                self.epochs[session_id] = command.epoch
            opened = self.live[session_id]
            return {"frame_count": opened.frame_count if isinstance(opened, LiveSession) else 0}
        if isinstance(command, OpenLive):
            if session_id not in self.live:
                opened = self.live[session_id] = StreamSession(
                    self._loaded(), store=command.store, mask_format=command.mask_format, first_frame=command.first_frame
                )
                self.epochs[session_id] = command.epoch
                if command.source_url:
                    opened.reader = self._stream_reader(session_id, command.source_url, first_seq=command.first_frame)
                    opened.reader.start()
            return {"frame_count": 0}
        if isinstance(command, CloseSession):
            self.slots.discard(session_id)  # a frame left for the session is not wanted (a new owner's is not touched above)
            return {"closed": self._forget(session_id)}
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
        epoch = self.epochs.get(session_id, 0)

        def write(store: SessionStore) -> None:
            if store_it and not store.frame_result_store(session_id=session_id, epoch=epoch, payload=result):
                return  # the session ended meanwhile
            store.publish(session_id, live_frame_event(result), epoch=epoch)

        self._write(session_id, epoch, write)
        self.answered[session_id] = result["seq"]

    def _stream_reader(self, session_id: str, url: str, *, first_seq: int) -> StreamReader:
        epoch = self.epochs[session_id]

        def publish(event: dict[str, Any]) -> None:
            self._write(session_id, epoch, lambda store: store.publish(session_id, event, epoch=epoch))

        def end(status: str, message: str, last_seq: int | None) -> None:
            """On the reader's thread: once the frames read are answered, end the session (compare-and-set
            from ready; a session still being opened becomes ready within moments, so that is waited for)."""
            deadline = time.monotonic() + DRAIN_SECONDS
            while last_seq is not None and self.answered.get(session_id, -1) < last_seq and time.monotonic() < deadline:
                time.sleep(0.05)
            while True:
                moved: Future = Future()  # the writer ends it: after the frames it is publishing

                def write(store: SessionStore, moved: Future = moved) -> None:
                    try:
                        moved.set_result(
                            store.set_status(session_id=session_id, status=status, error=message, from_statuses=[READY], epoch=epoch)
                        )
                    except SessionFenced:
                        moved.set_result(True)  # not ours to end any more
                        raise
                    if moved.result():
                        store.publish(session_id, StatusEvent(status, message=message).to_message(), epoch=epoch)

                if not self._owns(session_id, epoch):
                    return
                self._write(session_id, epoch, write)
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
        epoch = self.epochs.get(session_id, 0)
        self._write(session_id, epoch, lambda store: store.publish(session_id, error.to_message(), epoch=epoch))
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
        epoch = self.epochs[session_id]
        done, last_frame = 0, None
        state, error = "done", ""
        unstored: list[int] = []  # frames whose result the writer could not store (filled on its thread)
        self._write(session_id, epoch, lambda store: store.publish(session_id, StatusEvent(PROPAGATING).to_message(), epoch=epoch))
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
                progress_at = done if done % PROGRESS_EVERY_FRAMES == 0 else None
                self._write(session_id, epoch, _frame_writer(session_id, epoch, payload, progress_at, unstored))
                yield
        except Exception as failure:  # noqa: BLE001 - reported to the client, the worker goes on
            logger.exception("Propagation of session {} failed", session_id)
            state, error = "failed", f"{type(failure).__name__}: {failure}"
        finally:
            self._write(session_id, epoch, _end_writer(session_id, epoch, state, error, done, last_frame, unstored))

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
                opened = store.open_sessions()
                for owner in opened:  # held here at an epoch the records have moved past: let go
                    held = self.epochs.get(owner.session_id)
                    if owner.session_id in self.live and held is not None and (owner.worker, owner.epoch) != (self.runtime.name, held):
                        self._let_go(owner.session_id, held)
                for orphan in [s for s in opened if s.worker not in alive]:
                    epoch = store.claim(
                        session_id=orphan.session_id, from_worker=orphan.worker, from_epoch=orphan.epoch,
                        to_worker=self.runtime.name, to_queue=self.runtime.queue or "",
                    )
                    if epoch is not None:
                        self._recover(orphan.session_id, orphan.worker, epoch)
            except OperationalError as error:  # e.g. lock_timeout while a stalled worker holds a row: next round
                logger.warning("Session watchdog: database not available this round ({})", str(error).strip().splitlines()[0])
            except Exception:  # noqa: BLE001 - the watchdog must keep watching
                logger.exception("Session watchdog failed")
            finally:
                close_old_connections()

    def _recover(self, session_id: str, dead_worker: str, epoch: int) -> None:
        logger.warning("Worker {} is gone; rebuilding session {} here (epoch {})", dead_worker, session_id, epoch)
        store = session_store()
        try:
            plan = store.replay_plan(session_id)
            if plan.propagation_running:
                store.propagation_update(session_id=session_id, epoch=epoch, state="interrupted")
            # Queued on the model thread before the clients hear of the recovery: a live frame they
            # send once they have heard is computed after the session is rebuilt, not dropped as a
            # frame of a session this worker does not hold.
            rebuilt = self.runtime.scheduler.call(lambda: self._replay(session_id, plan, epoch))
            store.publish(session_id, StatusEvent(RECOVERING, lost_worker=dead_worker).to_message(), epoch=epoch)
            notice = rebuilt.result()
            if not store.set_status(session_id=session_id, status=READY, from_statuses=[RECOVERING], epoch=epoch):
                logger.info("Session {} ended while being rebuilt; its state is let go", session_id)
                self.execute(SessionMessage(session_id, CloseSession()))
                return
            store.publish(session_id, StatusEvent(READY, recovered=True, message=notice).to_message(), epoch=epoch)
        except SessionFenced:  # claimed again by a third worker meanwhile
            self._let_go(session_id, epoch)
        except Exception as failure:  # noqa: BLE001
            logger.exception("Session {} could not be rebuilt", session_id)
            with suppress(SessionFenced):
                if store.set_status(session_id=session_id, status=FAILED, error=str(failure), from_statuses=[RECOVERING], epoch=epoch):
                    store.publish(session_id, StatusEvent(FAILED, message=str(failure)).to_message(), epoch=epoch)
            self.execute(SessionMessage(session_id, CloseSession()))

    def _replay(self, session_id: str, plan: ReplayPlan, epoch: int) -> str | None:
        """Rebuild the live state from the prompt log, in order (on the model thread); what the client
        should know about the rebuilt session, if anything."""
        if plan.live is not None:
            return self._replay_live(session_id, plan, epoch)
        self._apply(session_id, OpenSession(plan.video_path, epoch=epoch))
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

    def _replay_live(self, session_id: str, plan: ReplayPlan, epoch: int) -> str | None:
        """A live session goes on from its next frame with its text prompts. Clicks and boxes named
        frames that were only on the lost worker, so their objects cannot be rebuilt."""
        assert plan.live is not None
        self._apply(session_id, OpenLive(**{**plan.live, "first_frame": plan.next_frame, "epoch": epoch}))
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


def _frame_writer(
    session_id: str, epoch: int, payload: dict[str, Any], progress_at: int | None, unstored: list[int]
) -> Callable[[SessionStore], None]:
    def write(store: SessionStore) -> None:
        try:
            stored = store.frame_result_store(session_id=session_id, epoch=epoch, payload=payload)
        except SessionFenced:
            raise
        except Exception:
            unstored.append(payload["frame"])  # the propagation then ends failed, naming it
            raise
        if not stored:
            return  # the session ended meanwhile: its frames are no longer wanted
        store.publish(session_id, FrameEvent(payload["frame"], payload["objects"]).to_message(), epoch=epoch)
        if progress_at is not None:
            store.propagation_update(session_id=session_id, epoch=epoch, frames_done=progress_at, last_frame=payload["frame"])
            store.publish(session_id, ProgressEvent(progress_at, payload["frame"]).to_message(), epoch=epoch)

    return write


def _end_writer(
    session_id: str, epoch: int, state: str, error: str, done: int, last_frame: int | None, unstored: list[int]
) -> Callable[[SessionStore], None]:
    def write(store: SessionStore) -> None:
        ended, reason = state, error
        if unstored and state == "done":  # computed but not all kept: the client must not take it for complete
            ended = "failed"
            reason = (
                f"The results of {len(unstored)} frame(s) could not be stored (the first: frame {unstored[0]}; the worker's "
                "log says why): propagate again."
            )
        store.propagation_update(
            session_id=session_id, epoch=epoch, state=ended, frames_done=done, last_frame=last_frame,
            finished_at=timezone.now().isoformat(), **({"error": reason} if reason else {}),
        )
        # Only a propagating session becomes ready again: a session closed meanwhile stays closed.
        ready = store.set_status(session_id=session_id, status=READY, from_statuses=[PROPAGATING], epoch=epoch)
        outcome: Literal["done", "cancelled", "error"] = "done" if ended == "done" else ("cancelled" if ended == "cancelled" else "error")
        store.publish(session_id, PropagationEnded(outcome, done, reason or None).to_message(), epoch=epoch)
        if ready:
            store.publish(session_id, StatusEvent(READY).to_message(), epoch=epoch)

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
