"""Video sessions inside a model worker: live state, commands, propagation, recovery, sweeping.

Commands run on the model thread (the runtime's scheduler), so they never race the image jobs
or each other; a propagation is a stream that yields after every frame, so other sessions and
image requests interleave with it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from loguru import logger

from inference import registry
from inference.runtime.video import set_temporal_disambiguation
from inference.runtime_process import ModelRuntime
from sam3site.errors import Conflict, InvalidInput, NotFound
from sessions import events, selectors, services
from sessions.encoding import frame_payload
from sessions.live import FrameObjects, LiveSession
from sessions.propagation import legs_from_json
from sessions.models import VideoSession

WATCHDOG_SECONDS = 0.5  # with the 1 s heartbeat and its 4 s timeout: a lost worker is noticed within 5 s
PROGRESS_EVERY_FRAMES = 5
_END = object()

_manager: SessionManager | None = None


def serves_video(device: str) -> bool:
    config = settings.CONFIG
    if not config.video_model_enabled:
        return False
    return device == "cpu" or int(device.partition(":")[2] or 0) in config.video_gpu_list


class SessionManager:
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.live: dict[str, LiveSession] = {}
        self._stop = threading.Event()
        self._configured = False
        runtime.session_count = lambda: len(self.live)

    # --- commands (from the Celery task thread, or the embedded server) ---

    def execute(self, command: dict[str, Any]) -> Future:
        op, session_id = command["op"], command["session_id"]
        if op == "close" and (live := self.live.get(session_id)) is not None:
            live.cancel.set()  # now, not after the running propagation's next frame: close wins over it
        if op == "cancel":
            done: Future = Future()
            live = self.live.get(session_id)
            if live is not None:
                live.cancel.set()
            done.set_result({"cancelling": live is not None})
            return done
        return self.runtime.scheduler.call(lambda: self._apply(op, session_id, command))

    def _live(self, session_id: str) -> LiveSession:
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

    def _apply(self, op: str, session_id: str, command: dict[str, Any]) -> dict[str, Any]:
        if op == "open":
            if session_id not in self.live:
                self.live[session_id] = LiveSession(self._loaded(), Path(command["video_path"]))
            return {"frame_count": self.live[session_id].frame_count}
        if op == "close":
            live = self.live.pop(session_id, None)
            if live is not None:
                live.cancel.set()
                live.close()
            return {"closed": live is not None}
        live = self._live(session_id)
        if op == "propagate":  # checked here, on the model thread; the frames then stream
            frames = live.propagation(legs_from_json(command["legs"]))
            live.cancel.clear()
            self.runtime.scheduler.submit_stream(self._propagation(session_id, live, frames))
            return {"accepted": True}
        if op == "prompt":
            return self._prompt(live, command["prompt"])
        if op == "remove_object":
            live.remove_object(int(command["object_id"]))
            return {"removed": int(command["object_id"]), "objects": live.object_ids()}
        if op == "reset":
            live.reset()
            return {"objects": []}
        raise ValueError(f"unknown session command {op!r}")

    def _prompt(self, live: LiveSession, prompt: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._apply_prompt(live, prompt)
        except ValueError as error:  # the engine's own prompt checks (e.g. prompt_too_long), as for images
            raise InvalidInput(str(error), code=getattr(error, "code", "invalid_prompt")) from None

    def _apply_prompt(self, live: LiveSession, prompt: dict[str, Any]) -> dict[str, Any]:
        frame, kind = int(prompt["frame"]), prompt["kind"]
        if kind == "text":
            return frame_payload(frame, [live.add_text(frame, prompt["text"])])
        if kind == "exemplar":
            threshold = prompt.get("threshold", settings.CONFIG.image_model_confidence_threshold)
            instances = live.add_exemplars(frame, prompt["boxes"], prompt.get("box_labels", []), prompt.get("text"), threshold)
            return frame_payload(frame, [instances])
        object_id, instances = live.add_points(
            frame, prompt.get("object_id"), prompt.get("points", []), prompt.get("point_labels", []), prompt.get("box")
        )
        return {**frame_payload(frame, [instances]), "object_id": object_id}

    # --- propagation ---

    def _propagation(self, session_id: str, live: LiveSession, frames: Iterator[FrameObjects | None]):  # noqa: ANN202
        done, last_frame = 0, None
        state, error = "done", ""
        events.publish(session_id, {"type": "status", "status": VideoSession.Status.PROPAGATING})
        try:
            while True:
                if live.cancel.is_set():  # before computing the next step: a closed session's frames are not wanted
                    state = "cancelled"
                    break
                item = next(frames, _END)
                if item is _END:
                    break
                if item is None:
                    yield
                    continue
                payload = frame_payload(item.frame, item.instances)
                services.frame_result_store(session_id=session_id, payload=payload)
                done, last_frame = done + 1, item.frame
                events.publish(session_id, {"type": "frame", **payload})
                if done % PROGRESS_EVERY_FRAMES == 0:
                    services.propagation_update(session_id=session_id, frames_done=done, last_frame=item.frame)
                    events.publish(session_id, {"type": "progress", "frames_done": done, "last_frame": item.frame})
                yield
        except Exception as failure:  # noqa: BLE001 - reported to the client, the worker goes on
            logger.exception("Propagation of session {} failed", session_id)
            state, error = "failed", f"{type(failure).__name__}: {failure}"
        finally:
            services.propagation_update(
                session_id=session_id, state=state, frames_done=done, last_frame=last_frame,
                finished_at=timezone.now().isoformat(),
                **({"error": error} if error else {}),
            )
            # Only a propagating session becomes ready again: a session closed meanwhile stays closed.
            ready = services.session_set_status(
                session_id=session_id, status=VideoSession.Status.READY, from_statuses=[VideoSession.Status.PROPAGATING]
            )
            final = {"done": "done", "cancelled": "cancelled"}.get(state, "error")
            events.publish(session_id, {"type": final, "frames_done": done, **({"message": error} if error else {})})
            if ready:
                events.publish(session_id, {"type": "status", "status": VideoSession.Status.READY})
            close_old_connections()

    # --- lifetime: recovery of orphaned sessions, sweeping ---

    def start(self) -> None:
        if self.runtime.queue is not None and serves_video(self.runtime.device):
            threading.Thread(target=self._watch_orphans, name="session-watchdog", daemon=True).start()
        threading.Thread(target=self._sweep_periodically, name="session-sweeper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch_orphans(self) -> None:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        while not self._stop.wait(WATCHDOG_SECONDS):
            if not self.runtime.host.ready:
                continue
            try:
                alive = {w.name for w in registry.read_workers(client) if w.alive} | {self.runtime.name}
                orphans = list(selectors.open_sessions().exclude(worker__in=alive).values_list("pk", "worker"))
                for session_id, dead_worker in orphans:
                    if services.session_claim(
                        session_id=str(session_id), from_worker=dead_worker, to_worker=self.runtime.name,
                        to_queue=self.runtime.queue or "",
                    ):
                        self._recover(str(session_id), dead_worker)
            except Exception:  # noqa: BLE001 - the watchdog must keep watching
                logger.exception("Session watchdog failed")
            finally:
                close_old_connections()

    def _recover(self, session_id: str, dead_worker: str) -> None:
        logger.warning("Worker {} is gone; rebuilding session {} here", dead_worker, session_id)
        events.publish(session_id, {"type": "status", "status": VideoSession.Status.RECOVERING, "lost_worker": dead_worker})
        session = VideoSession.objects.select_related("video").get(pk=session_id)
        if session.propagation.get("state") == "running":
            services.propagation_update(session_id=session_id, state="interrupted")
        try:
            self.runtime.scheduler.call(lambda: self._replay(session)).result()
        except Exception as failure:  # noqa: BLE001
            logger.exception("Session {} could not be rebuilt", session_id)
            if services.session_set_status(
                session_id=session_id, status=VideoSession.Status.FAILED, error=str(failure),
                from_statuses=[VideoSession.Status.RECOVERING],
            ):
                events.publish(session_id, {"type": "status", "status": VideoSession.Status.FAILED, "message": str(failure)})
            self.execute({"op": "close", "session_id": session_id})
            return
        if not services.session_set_status(
            session_id=session_id, status=VideoSession.Status.READY, from_statuses=[VideoSession.Status.RECOVERING]
        ):  # closed or expired while being rebuilt: nothing to keep
            self.execute({"op": "close", "session_id": session_id})
            return
        events.publish(session_id, {"type": "status", "status": VideoSession.Status.READY, "recovered": True})

    def _replay(self, session: VideoSession) -> None:
        """Rebuild the live state from the prompt log, in order (on the model thread)."""
        session_id = str(session.pk)
        self._apply("open", session_id, {"video_path": str(session.video.path)})
        for entry in selectors.prompt_log(session=session):
            if entry.kind == "remove_object":
                self._apply("remove_object", session_id, {"object_id": entry.payload["object_id"]})
            elif entry.kind == "reset":
                self._apply("reset", session_id, {})
            else:
                self._prompt(self.live[session_id], entry.payload)

    def _sweep_periodically(self) -> None:
        while not self._stop.wait(settings.CONFIG.session_cleanup_interval_seconds):
            try:
                services.sessions_sweep()
                still_here = set(
                    str(pk) for pk in selectors.open_sessions().filter(worker=self.runtime.name).values_list("pk", flat=True)
                )
                for session_id in [s for s in self.live if s not in still_here]:
                    self.execute({"op": "close", "session_id": session_id})
            except Exception:  # noqa: BLE001
                logger.exception("Session sweep failed")
            finally:
                close_old_connections()


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
