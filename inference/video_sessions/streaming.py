"""Live sessions inside a model worker: frames pushed by the client, computed latest-wins.

A pump thread per worker waits for sessions whose frame slot holds a frame (:mod:`inference.live_frames`),
takes the frame (the newest: older ones were replaced in the slot and reported skipped by the web),
decodes it, has the model thread compute it (:class:`StreamSession.push`), and hands the result to
the writer thread, which stores it (when the session asked) and publishes it. While one frame is
computed the next ones overwrite each other in the slot, so latency stays one frame's compute plus
transport, and nothing queues.

Prompts name the frame they were given on by the client's sequence number; the last
``KEEP_FRAMES`` computed frames can be named.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np
from loguru import logger

from inference.live_frames import PUSH_SCRIPT, SLOT_SECONDS, TAKE_SCRIPT, LiveFrame, frame_from_slot, frame_meta, ready_key, slot_key
from inference.messages import LiveFrameError, LiveFrameEvent, VideoPrompt
from inference.runtime.engine import check_text_prompt
from inference.runtime.loader import LoadedSam3
from inference.runtime.streaming import KEEP_FRAMES, LiveStream
from inference.video_sessions.encoding import objects_payload
from inference.video_sessions.live import INTERACTIVE_ID_BASE, KEEP_HISTORY_FRAMES
from inference.video_sessions.stream_reader import StreamReader
from sam3site import redis_clients
from sam3site.errors import Conflict, InvalidInput, NotFound

WAIT_SECONDS = 1.0  # how often the pump looks up from waiting (to notice a stop)


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG/WebP bytes as uint8 RGB [H, W, 3] (the web checked format and pixel count)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("the image could not be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class StreamSession:
    """The model-side state of one live session; only the model thread touches it (but ``cancel``)."""

    def __init__(self, loaded: LoadedSam3, *, store: bool, mask_format: str, first_frame: int = 0) -> None:
        self.loaded = loaded
        self.store = store
        self.mask_format = mask_format
        self.first_frame = first_frame  # what the client is told a frame's number is: first_frame + the model's index
        self.stream: LiveStream | None = None  # from the first frame on (it gives the size)
        self.texts: list[str] = []
        self.frame_of_seq: OrderedDict[int, int] = OrderedDict()  # recent computed frames' seq -> model frame index
        self.next_object_id = INTERACTIVE_ID_BASE
        self.cancel = threading.Event()  # the manager sets it on close; nothing runs long here
        self.reader: StreamReader | None = None  # a stream URL session's frames (else the client pushes them)

    def push(self, frame: LiveFrame, image: np.ndarray) -> dict[str, Any]:
        """Compute one pushed frame; its result as the client receives it."""
        if self.stream is None:
            self.stream = LiveStream(self.loaded, image, keep_history=KEEP_HISTORY_FRAMES)
            for text in self.texts:
                self.stream.concept_session().add_text_prompt(text)
        index, parts = self.stream.push(image)
        self.frame_of_seq[frame.seq] = index
        while len(self.frame_of_seq) > KEEP_FRAMES:
            self.frame_of_seq.popitem(last=False)
        return {"seq": frame.seq, "frame": self.first_frame + index, "ts": frame.ts, "objects": objects_payload(parts, self.mask_format)}

    def _frame_of(self, seq: int) -> tuple[LiveStream, int]:
        index = self.frame_of_seq.get(seq)
        if self.stream is None or index is None or not self.stream.has_frame(index):
            raise Conflict(
                f"Frame {seq} is not among the last {KEEP_FRAMES} computed frames (prompts name one of those by its seq).",
                code="frame_not_kept", detail={"seq": seq, "recent": list(self.frame_of_seq)},
            )
        return self.stream, index

    def prompt(self, prompt: VideoPrompt) -> dict[str, Any]:
        """Text: tracked from the next frame on. Points/box: a new object (or a refined one) on frame ``seq``."""
        if prompt.kind == "text":
            text = (prompt.text or "").strip()
            try:
                check_text_prompt(self.loaded, text)
                if self.stream is not None:
                    self.stream.concept_session().add_text_prompt(text)
            except ValueError as error:
                raise InvalidInput(str(error), code=getattr(error, "code", "invalid_prompt")) from None
            if text and text not in self.texts:
                self.texts.append(text)
            return {"texts": list(self.texts), "objects": []}
        if prompt.kind != "points":
            raise InvalidInput(
                "Live sessions take text and points/box prompts; exemplar boxes are not supported.", code="not_supported_live"
            )
        stream, index = self._frame_of(prompt.frame)
        height, width = stream.size
        coordinates = [*prompt.points, *([prompt.box[:2], prompt.box[2:]] if prompt.box else [])]
        if any(not (0 <= x <= width and 0 <= y <= height) for x, y in coordinates):
            raise InvalidInput(
                f"Points and boxes must lie inside the {width}x{height} frame.", code="outside_image",
                detail={"width": width, "height": height},
            )
        interactive = stream.interactive_session()
        object_id = prompt.object_id
        clear_old = True
        if object_id is None:
            object_id, self.next_object_id = self.next_object_id, self.next_object_id + 1
        elif object_id in interactive.object_ids:
            clear_old = False
        else:
            raise NotFound(f"Object {object_id} is not one you designated with points or a box.", code="unknown_object")
        try:
            instances = interactive.add_prompt(
                index, object_id, points=prompt.points or None, point_labels=prompt.point_labels or None, box=prompt.box,
                clear_old=clear_old,
            )
        except ValueError as error:
            raise InvalidInput(str(error), code="invalid_prompt") from None
        return {
            "seq": prompt.frame, "frame": self.first_frame + index, "object_id": object_id,
            "objects": objects_payload([instances], self.mask_format),
        }

    def remove_object(self, object_id: int) -> None:
        stream = self.stream
        if stream is not None and stream.interactive is not None and object_id in stream.interactive.object_ids:
            stream.interactive.remove_object(object_id)
        elif stream is not None and stream.concept is not None and object_id in stream.concept.object_ids:
            stream.concept.remove_object(object_id)
        else:
            raise NotFound(f"Object {object_id} does not exist in this session.", code="unknown_object")

    def object_ids(self) -> list[int]:
        stream = self.stream
        if stream is None:
            return []
        return (stream.concept.object_ids if stream.concept else []) + (stream.interactive.object_ids if stream.interactive else [])

    def reset(self) -> None:
        """Forget every prompt and object; the stream goes on."""
        self.texts = []
        self.next_object_id = INTERACTIVE_ID_BASE
        if self.stream is not None:
            self.stream.concept = None
            self.stream.interactive = None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.stop()
        if self.stream is not None:
            self.stream.close()


# --- the frame slots: where the web leaves each session's newest frame ---


class FrameSlots(Protocol):
    def wait_ready(self, timeout: float) -> str | None:
        """A session whose slot holds a frame, or None after ``timeout`` seconds."""
        ...

    def take(self, session_id: str) -> LiveFrame | None: ...

    def put(self, session_id: str, frame: LiveFrame) -> int | None:
        """Leave a frame (a stream URL's, read on this worker); the seq of the untaken frame it replaced."""
        ...

    def discard(self, session_id: str) -> None: ...


class MemorySlots:
    """The embedded default's slots (web and model in one process)."""

    def __init__(self) -> None:
        self._frames: dict[str, LiveFrame] = {}
        self._lock = threading.Lock()
        self._ready: queue.SimpleQueue[str] = queue.SimpleQueue()

    def put(self, session_id: str, frame: LiveFrame) -> int | None:
        with self._lock:
            replaced = self._frames.get(session_id)
            self._frames[session_id] = frame
        if replaced is None:
            self._ready.put(session_id)
            return None
        return replaced.seq

    def wait_ready(self, timeout: float) -> str | None:
        try:
            return self._ready.get(timeout=timeout)
        except queue.Empty:
            return None

    def take(self, session_id: str) -> LiveFrame | None:
        with self._lock:
            return self._frames.pop(session_id, None)

    def discard(self, session_id: str) -> None:
        self.take(session_id)


class RedisSlots:
    """Model workers' slots: filled by the web processes (inference.live_frames.push_to_redis)."""

    def __init__(self, worker_queue: str) -> None:
        self._ready_key = ready_key(worker_queue)

    def put(self, session_id: str, frame: LiveFrame) -> int | None:
        replaced = redis_clients.client().eval(
            PUSH_SCRIPT, 2, slot_key(session_id), self._ready_key, frame.seq, frame_meta(frame), frame.image, SLOT_SECONDS, session_id,
        )
        return None if replaced is None else int(replaced)

    def wait_ready(self, timeout: float) -> str | None:
        found = redis_clients.client(timeout=timeout + 5).blpop([self._ready_key], timeout=timeout)
        if found is None:
            return None
        value = found[1]
        return value.decode() if isinstance(value, bytes) else str(value)

    def take(self, session_id: str) -> LiveFrame | None:
        meta, image = redis_clients.client().eval(TAKE_SCRIPT, 1, slot_key(session_id))
        return None if meta is None else frame_from_slot(meta, image)

    def discard(self, session_id: str) -> None:
        redis_clients.client().delete(slot_key(session_id))


class FramePump:
    """Takes each live session's newest frame, has ``compute`` run it, hands the result to ``deliver``."""

    def __init__(
        self,
        slots: FrameSlots,
        compute: Callable[[str, LiveFrame, np.ndarray], dict[str, Any] | None],
        deliver: Callable[[str, dict[str, Any]], None],
        refuse: Callable[[str, LiveFrameError], None],
    ) -> None:
        self.slots = slots
        self._compute = compute
        self._deliver = deliver
        self._refuse = refuse
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="live-frames", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                session_id = self.slots.wait_ready(WAIT_SECONDS)
                frame = self.slots.take(session_id) if session_id is not None else None
                if session_id is not None and frame is not None:
                    self._one(session_id, frame)
            except Exception:  # noqa: BLE001 - the pump must keep pumping
                logger.exception("Live frame pump failed")
                self._stop.wait(WAIT_SECONDS)

    def _one(self, session_id: str, frame: LiveFrame) -> None:
        try:
            image = decode_image(frame.image)
            result = self._compute(session_id, frame, image)
        except ValueError as error:  # a frame the model cannot take; the stream goes on
            self._refuse(session_id, LiveFrameError(frame.seq, "invalid_frame", str(error)))
            return
        except Exception as error:  # noqa: BLE001 - answered, so every frame sent gets an answer
            logger.exception("Live frame {} of session {} failed", frame.seq, session_id)
            self._refuse(session_id, LiveFrameError(frame.seq, "frame_failed", f"{type(error).__name__}: {error}"))
            return
        if result is not None:
            self._deliver(session_id, result)


def live_frame_event(result: dict[str, Any]) -> dict[str, Any]:
    return LiveFrameEvent(result["seq"], result["frame"], result["objects"], result["ts"]).to_message()
