"""Live video: frames pushed from a camera, a video file or arrays to a live session, each
computed frame's objects handed back as it comes (docs/video-sessions.md, "Live sessions").

One operation (:meth:`LiveRun.stream`) drives the socket for both clients: it sends a frame when
the previous one's answer is in (at most one frame computing and one waiting in the server's slot,
so its latest-wins keeps latency flat), or on a camera's clock with ``fps``; reads answers in
between; acknowledges each frame once the caller has taken it; and closes the session at the end,
also when the caller stops early. Prompts given to the handle mid-stream go out before the next frame.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sam3_client._core import (
    AsyncStream,
    Blocking,
    Bound,
    Call,
    CloseSocket,
    Connect,
    Emit,
    Receive,
    ReceiveTimeout,
    SendText,
    Socket,
    SocketClosed,
    Stream,
    StreamClosed,
    SyncStream,
)
from sam3_client.errors import APIConnectionError, APIError, APITimeoutError, api_error
from sam3_client.masks import MaskFormat
from sam3_client.models import LiveFrame, floats
from sam3_client.sessions import ENDED

IN_FLIGHT = 2  # one frame computing, the newest waiting in the server's slot
JPEG_QUALITY = 90


def rgb_frames(source: Any) -> Generator[np.ndarray[Any, Any], None, None]:
    """RGB uint8 arrays from a ``cv2.VideoCapture``-like object (``read()`` giving BGR, as OpenCV does),
    a video file (decoded with PyAV) or an iterable of RGB arrays."""
    if hasattr(source, "read") and callable(source.read):
        while True:
            ok, image = source.read()
            if not ok:
                return
            yield np.ascontiguousarray(image[..., ::-1])
    elif isinstance(source, str | os.PathLike):
        try:
            import av
        except ImportError as missing:
            raise ImportError("Reading video files needs PyAV: pip install 'sam3-client[live]'") from missing
        with av.open(os.fspath(source)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    else:
        yield from iter(source)


def encode_jpeg(image: np.ndarray[Any, Any]) -> bytes:
    try:
        from PIL import Image
    except ImportError as missing:
        raise ImportError("Live video needs Pillow: pip install 'sam3-client[live]'") from missing
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Frames must be uint8 (h, w, 3) RGB arrays; got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def frame_message(seq: int, image: bytes, ts: float) -> bytes:
    """The binary message carrying a frame: header length (4 bytes, big-endian), JSON header, image."""
    header = json.dumps({"seq": seq, "ts": ts}).encode()
    return struct.pack(">I", len(header)) + header + image


def _next_encoded(frames: Iterator[np.ndarray[Any, Any]]) -> tuple[bytes, int, int] | None:
    image = next(frames, None)
    if image is None:
        return None
    return encode_jpeg(image), int(image.shape[0]), int(image.shape[1])


class LiveRun:
    """One ``client.live()`` stream: what it has sent, what came back, the prompts waiting to go out."""

    def __init__(
        self, source: Any, *, text: str | None, mask_format: MaskFormat, fps: float | None, store: bool,
        result_timeout: float,
    ) -> None:
        if fps is not None and fps <= 0:
            raise ValueError("fps must be positive")
        if isinstance(source, str | os.PathLike) and not Path(source).is_file():
            raise FileNotFoundError(f"No such file: {source}")
        self.source, self.mask_format, self.fps, self.store = source, mask_format, fps, store
        self.result_timeout = result_timeout
        self.session_id: str | None = None
        self.sent = 0
        self.skipped: list[int] = []  # seqs the server dropped for a newer frame (latest-wins)
        self.errors: dict[int, APIError] = {}  # seqs the server refused or failed on
        self.prompt_errors: list[APIError] = []  # prompts the server refused, in order
        self.texts: list[str] = []  # the phrases in use, as the server last answered
        self.pending: list[dict[str, Any]] = [{"type": "prompt", "text": text}] if text else []
        self.size = (0, 0)  # (height, width) of the stream's frames

    def prompt(
        self, text: str | None = None, *, seq: int | None = None, points: Sequence[Sequence[float]] | None = None,
        point_labels: Sequence[int] | None = None, box: Sequence[float] | None = None, object_id: int | None = None,
    ) -> None:
        """Add a phrase to track from the next computed frame on, or an object clicked / boxed on frame
        ``seq`` (one of the last 8 computed); sent before the next frame. A refused one lands in
        ``prompt_errors``."""
        message: dict[str, Any] = {"type": "prompt"}
        if text is not None:
            message["text"] = text
        if points is not None or box is not None:
            if seq is None:
                raise ValueError("points and boxes name the frame they are on: give seq")
            message["seq"] = seq
        if points is not None:
            message["points"] = [floats(p) for p in points]
            message["point_labels"] = [int(v) for v in point_labels] if point_labels is not None else [1] * len(points)
        if box is not None:
            message["box"] = floats(box)
        if object_id is not None:
            message["object_id"] = object_id
        if len(message) == 1:
            raise ValueError("give text, points or a box")
        self.pending.append(message)

    def stream(self, bound: Bound) -> Stream[LiveFrame]:
        body = {"live": True, "store": self.store, "mask_format": self.mask_format}
        created = yield from bound._json("POST", "sessions/", json=body)
        self.session_id = str(created["id"])
        socket: Socket | None = None
        try:
            outcome = yield Connect(f"/ws/sessions/{self.session_id}/live/")
            if not isinstance(outcome, Socket):
                raise APIConnectionError(f"The live websocket was refused: {outcome.message}")
            socket = outcome
            yield from self._exchange(socket)
        except StreamClosed:
            pass
        finally:
            if socket is not None:
                yield CloseSocket(socket)
            if not self.store:  # stored results stay readable until the caller closes the session
                yield from bound._call(Call("DELETE", f"sessions/{self.session_id}/"), accept=(404, 410))

    def _exchange(self, socket: Socket) -> Stream[LiveFrame]:
        frames = rgb_frames(self.source)
        try:
            yield from self._send_and_receive(socket, frames)
        finally:
            frames.close()  # a video file is closed now, also when the caller stops early

    def _send_and_receive(self, socket: Socket, frames: Iterator[np.ndarray[Any, Any]]) -> Stream[LiveFrame]:
        outstanding: set[int] = set()
        exhausted = False
        started = time.monotonic()
        last_answer = started
        while True:
            while self.pending:
                yield SendText(socket, json.dumps(self.pending.pop(0)))
            due = started + self.sent / self.fps if self.fps else None
            now = time.monotonic()
            if not exhausted and (now >= due if due is not None else len(outstanding) < IN_FLIGHT):
                encoded = yield Blocking(lambda: _next_encoded(frames))
                if encoded is None:
                    exhausted = True
                    continue
                image, height, width = encoded
                self.size = (height, width)
                yield SendText(socket, frame_message(self.sent, image, time.time()))
                outstanding.add(self.sent)
                self.sent += 1
                continue
            if exhausted and not outstanding:
                return
            wait = max(0.0, due - now) if due is not None and not exhausted else self.result_timeout
            message = yield Receive(socket, max(wait, 0.001))
            if isinstance(message, ReceiveTimeout):
                if outstanding and time.monotonic() - last_answer > self.result_timeout:
                    raise APITimeoutError(f"No answer to frames {sorted(outstanding)} for {self.result_timeout:.0f} s")
                continue
            if isinstance(message, SocketClosed):
                raise APIConnectionError(f"The live websocket closed ({message.code} {message.reason})".strip())
            last_answer = time.monotonic()
            event = json.loads(message)
            kind = event.get("type")
            if kind == "frame":
                outstanding.discard(int(event["seq"]))
                yield Emit(LiveFrame.from_json(event, self.mask_format, *self.size))
                yield SendText(socket, '{"type": "ack"}')  # taken by the caller: masks keep coming inline
            elif kind == "skipped":
                seqs = [int(s) for s in event["seqs"]]
                outstanding.difference_update(seqs)
                self.skipped.extend(seqs)
            elif kind == "prompt_result" and "texts" in event:
                self.texts = [str(t) for t in event["texts"]]
            elif kind == "status" and event.get("status") == "recovering":
                # the worker died: frames it had are not answered; the session goes on on another one
                outstanding.clear()
            elif kind == "status" and event.get("status") in ENDED:
                raise api_error(410, f"session_{event['status']}", event.get("message") or f"The session is {event['status']}.")
            elif kind == "error":
                detail = event.get("detail")
                error = api_error(400, str(event.get("code")), str(event.get("message")), detail=detail)
                seq = detail.get("seq") if isinstance(detail, dict) else None
                if seq in outstanding:  # a frame refused or failed: its answer
                    outstanding.discard(seq)
                    self.errors[seq] = error
                else:  # a prompt refused (a click on a frame no longer kept...): the stream goes on
                    self.prompt_errors.append(error)


class LiveHandle:
    """What :class:`Live` and :class:`AsyncLive` add to their stream: the run's counters and :meth:`prompt`."""

    _run: LiveRun

    @property
    def session_id(self) -> str | None:
        """The live session's id, once the stream has opened it (the first ``next``)."""
        return self._run.session_id

    @property
    def sent(self) -> int:
        return self._run.sent

    @property
    def skipped(self) -> list[int]:
        """Seqs the server dropped because a newer frame arrived while the model was busy."""
        return self._run.skipped

    @property
    def errors(self) -> dict[int, APIError]:
        """Seqs the server refused (``invalid_frame``...) or failed on (``frame_failed``), with the error."""
        return self._run.errors

    @property
    def prompt_errors(self) -> list[APIError]:
        """Prompts the server refused (``frame_not_kept``, ``outside_image``...): the stream goes on without them."""
        return self._run.prompt_errors

    @property
    def texts(self) -> list[str]:
        """The phrases tracked, as the server last confirmed them."""
        return self._run.texts

    def prompt(
        self, text: str | None = None, *, seq: int | None = None, points: Sequence[Sequence[float]] | None = None,
        point_labels: Sequence[int] | None = None, box: Sequence[float] | None = None, object_id: int | None = None,
    ) -> None:
        self._run.prompt(text, seq=seq, points=points, point_labels=point_labels, box=box, object_id=object_id)

    prompt.__doc__ = LiveRun.prompt.__doc__


class Live(LiveHandle, SyncStream[LiveFrame]):
    """Results of a live session as they come (blocking iterator). Leaving the loop closes the session."""

    def __init__(self, run: LiveRun, values: Generator[LiveFrame, None, None]) -> None:
        super().__init__(values)
        self._run = run

    def __enter__(self) -> Live:
        return self


class AsyncLive(LiveHandle, AsyncStream[LiveFrame]):
    """Results of a live session as they come (async iterator). ``async with`` closes the session at once
    when leaving early."""

    def __init__(self, run: LiveRun, values: AsyncIterator[LiveFrame]) -> None:
        super().__init__(values)
        self._run = run

    async def __aenter__(self) -> AsyncLive:
        return self

