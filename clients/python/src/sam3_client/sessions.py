"""Video sessions: prompts on frames, propagation streamed over the session's websocket.

``propagate()`` speaks the websocket protocol of docs/video-sessions.md: it opens the socket before
starting the propagation (so no frame is missed), acknowledges each frame once the caller has
taken it (so masks keep coming inline), reads from the stored results whatever did not come over
the socket with its masks — notices for a slow reader, frames sent while the socket was being
reopened, the end of a run it did not hear about — reconnects after a drop, resumes after a
worker's death (``status: ready, recovered``) and hands every frame over once, in the
propagation's order. Stopping early cancels the propagation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from sam3_client._core import (
    AsyncBound,
    AsyncDriver,
    Bound,
    Call,
    CloseSocket,
    Connect,
    ConnectFailed,
    Emit,
    Op,
    Receive,
    ReceiveTimeout,
    SendText,
    Sleep,
    Socket,
    SocketClosed,
    Stream,
    StreamClosed,
    SyncBound,
    SyncDriver,
    error_from_reply,
    operation,
    stream,
)
from sam3_client.config import ClientConfig
from sam3_client.errors import APIConnectionError, PropagationFailed, PropagationStalled, Sam3Error, api_error
from sam3_client.models import Frame, Leg, Propagation, SessionInfo, floats

Direction = Literal["forward", "backward", "both"]
Point = Sequence[float]

ENDED = ("closed", "expired", "failed")
SESSION_ENDED_CLOSE_CODE = 4410
QUIET_SECONDS = 10.0  # after this long without a message, the session's record is read over REST
RECONNECT_ATTEMPTS = 8
CANCEL_WAIT_SECONDS = 15.0
PAGE_LIMIT = 1000  # the API's largest page


class SessionBase(Bound):
    """Shared by :class:`Session` and :class:`AsyncSession`: every method is defined once here."""

    info: SessionInfo

    def __init__(self, config: ClientConfig, info: SessionInfo) -> None:
        self._config = config
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> str:
        """As of the last answer from the server (see :meth:`refresh`)."""
        return self.info.status

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.info.status}, {self.info.frame_count} frames>"

    def _path(self, tail: str = "") -> str:
        return f"sessions/{self.id}/{tail}"

    @operation
    def refresh(self) -> Op[SessionInfo]:
        """Read the session's record again (status, propagation progress, prompt log)."""
        self.info = SessionInfo.from_json((yield from self._json("GET", self._path())))
        return self.info

    @operation
    def add_text(self, text: str, *, frame: int = 0) -> Op[Frame]:
        """Track every instance of a concept (SAM3 concept tracking); answers that frame's objects."""
        return (yield from self._prompt({"frame": frame, "text": text}))

    @operation
    def add_points(
        self, points: Sequence[Point] | None = None, labels: Sequence[int] | None = None, *, frame: int = 0,
        box: Sequence[float] | None = None, object_id: int | None = None,
    ) -> Op[Frame]:
        """Clicks (``labels``: 1 on the object, 0 background; all 1 by default) and/or one box around one
        object: a new object (its id in ``Frame.object_id``), or with ``object_id`` a refinement of it."""
        if points is None and box is None:
            raise ValueError("give points and/or a box")
        prompt: dict[str, Any] = {"frame": frame}
        if points is not None:
            prompt["points"] = [floats(p) for p in points]
            prompt["point_labels"] = [int(v) for v in labels] if labels is not None else [1] * len(points)
        if box is not None:
            prompt["box"] = floats(box)
        if object_id is not None:
            prompt["object_id"] = object_id
        return (yield from self._prompt(prompt))

    @operation
    def add_boxes(
        self, boxes: Sequence[Sequence[float]], labels: Sequence[int] | None = None, *, frame: int = 0, text: str | None = None,
        threshold: float | None = None,
    ) -> Op[Frame]:
        """Exemplar boxes ``[x1, y1, x2, y2]``: the instances like them on ``frame`` become tracked objects."""
        prompt: dict[str, Any] = {"frame": frame, "boxes": [floats(b) for b in boxes]}
        prompt["box_labels"] = [int(v) for v in labels] if labels is not None else [1] * len(boxes)
        if text is not None:
            prompt["text"] = text
        if threshold is not None:
            prompt["threshold"] = threshold
        return (yield from self._prompt(prompt))

    def _prompt(self, prompt: dict[str, Any]) -> Op[Frame]:
        return Frame.from_json((yield from self._json("POST", self._path("prompts/"), json=prompt)))

    @operation
    def remove_object(self, object_id: int) -> Op[list[int]]:
        """Stop tracking an object; answers the ids still tracked."""
        body = yield from self._json("POST", self._path("remove-object/"), json={"object_id": object_id})
        return [int(v) for v in body["objects"]]

    @operation
    def reset(self) -> Op[list[int]]:
        """Forget every prompt and object."""
        body = yield from self._json("POST", self._path("reset/"), json={})
        return [int(v) for v in body["objects"]]

    @operation
    def cancel(self) -> Op[bool]:
        """Stop the running propagation; False when it had already finished."""
        body = yield from self._json("POST", self._path("cancel/"), json={})
        return bool(body.get("cancelling"))

    @operation
    def close(self) -> Op[None]:
        """Close the session: frees the worker's memory and deletes the stored results (idempotent)."""
        yield from self._call(Call("DELETE", self._path()))
        if self.info.is_open:
            self.info = replace(self.info, status="closed")

    @stream
    def frames(self, *, from_frame: int = 0, page_size: int = 100) -> Stream[Frame]:
        """The stored per-frame results, in frame order, read page by page."""
        yield from self._pages(self._path("frames/"), Frame.from_json, page_size=page_size, from_frame=from_frame)

    @stream
    def propagate(
        self, direction: Direction = "forward", *, start_frame: int | None = None, max_frames: int | None = None,
        idle_timeout: float | None = 900.0,
    ) -> Stream[Frame]:
        """Propagate the prompts through the video, yielding each frame's objects as it is computed.

        ``forward`` covers ``start_frame`` (default 0) to the end, ``backward`` down to 0, ``both``
        forward then backward from the frame before ``start_frame``; ``max_frames`` bounds each pass.
        Every frame comes once, in that order, also across a dropped connection or a worker's death
        (the stream resumes the propagation). Stopping early (``break``, ``close()``) cancels it.
        :class:`~sam3_client.PropagationStalled` is raised after ``idle_timeout`` seconds without
        progress (None: wait for ever).
        """
        body: dict[str, Any] = {"direction": direction, "max_frames": max_frames}
        if start_frame is not None:
            body["start_frame"] = start_frame
        run = _Propagation(self, idle_timeout)
        yield from run.stream(body)


class _Order:
    """The frames of a propagation in the order it delivers them, and how many the caller has had:
    frames are handed over in this order, each once (``handed`` is a position in ``frames``)."""

    def __init__(self, legs: list[Leg], frame_count: int) -> None:
        self.frames = [frame for leg in legs for frame in leg.frames(frame_count)]
        self.position = {frame: index for index, frame in enumerate(self.frames)}
        self.handed = 0

    def due_through(self, frame: int) -> list[int] | None:
        """The frames to hand over to reach ``frame`` (it included); None when it was handed over already
        (a frame computed again after a resume) or is not part of the propagation."""
        index = self.position.get(frame)
        if index is None or index < self.handed:
            return None
        return self.frames[self.handed : index + 1]

    def due_until(self, position: int) -> list[int]:
        return self.frames[self.handed : max(self.handed, position)]


class _Propagation:
    """One ``propagate()`` call: the socket, the order of frames, the run being followed."""

    def __init__(self, session: SessionBase, idle_timeout: float | None) -> None:
        self.session = session
        self.idle_timeout = idle_timeout
        self.socket: Socket | None = None
        self.order = _Order([], session.info.frame_count)
        self.run_start = 0  # position in the order of the current run's first frame (a resumed run starts later)
        self.started_at: str | None = None  # identifies the run being followed
        self.finished = False
        self.last_change = time.monotonic()

    def stream(self, body: dict[str, Any]) -> Stream[Frame]:
        """Open the socket, start the propagation (``body``), hand its frames over until it ends."""
        try:
            yield from self._connect()
            started = yield from self.session._json("POST", self.session._path("propagate/"), json=body)
            record = started["propagation"]
            self._follow(record)
            while not self.finished:
                yield from self._next_message()
        except StreamClosed:
            if not self.finished:
                yield from self._cancel()
        finally:
            if self.socket is not None:
                yield CloseSocket(self.socket)

    def _follow(self, record: dict[str, Any]) -> None:
        propagation = Propagation.from_json(record)
        assert propagation is not None
        if self.started_at is None:
            self.order = _Order(propagation.legs, self.session.info.frame_count)
        self.run_start = self.order.position.get(propagation.legs[0].first, 0) if propagation.legs else 0
        self.started_at = record.get("started_at")

    # --- the socket ---

    def _connect(self) -> Stream[Frame]:
        for attempt in range(RECONNECT_ATTEMPTS):
            if attempt:
                yield Sleep(self.session._config.retry.backoff_delay(attempt - 1))
            outcome = yield Connect(f"/ws/sessions/{self.session.id}/")
            if isinstance(outcome, Socket):
                self.socket = outcome
                hello = yield Receive(outcome, self.session._config.connect_timeout)
                if isinstance(hello, str):
                    message = json.loads(hello)
                    if message.get("type") == "status" and message["status"] in ENDED:
                        raise _ended(message["status"], message.get("message"))
                    if message.get("type") == "status" and self.started_at is not None:  # a reconnection
                        yield from self._on_record(message["status"], message.get("propagation") or {})
                    return
                yield CloseSocket(outcome)  # closed or silent right away: try again
                continue
            failure: ConnectFailed = outcome
            if failure.status is not None:  # refused: the REST API says why (key revoked, session gone...)
                yield from self.session._json("GET", self.session._path())
                raise APIConnectionError(f"The session's websocket was refused: {failure.message}")
        raise APIConnectionError(f"Could not open the session's websocket after {RECONNECT_ATTEMPTS} attempts")

    def _next_message(self) -> Stream[Frame]:
        assert self.socket is not None
        outcome = yield Receive(self.socket, QUIET_SECONDS)
        if isinstance(outcome, ReceiveTimeout):
            yield from self._resync()
            if self.idle_timeout is not None and time.monotonic() - self.last_change > self.idle_timeout:
                raise PropagationStalled(f"No progress for {self.idle_timeout:.0f} s")
            return
        if isinstance(outcome, SocketClosed):
            if outcome.code == SESSION_ENDED_CLOSE_CODE:
                yield from self._resync()  # raises the session's own 410 error
            yield from self._connect()
            return
        message = json.loads(outcome)
        kind = message.get("type")
        if kind == "frame":
            due = self.order.due_through(message["frame"])
            if due:
                live = None if message.get("masks_omitted") else Frame.from_json(message)
                yield from self._hand_over(due, live)
            yield SendText(self.socket, '{"type": "ack"}')  # every frame received so far is handled
        elif kind == "status":
            self.last_change = time.monotonic()
            yield from self._on_status(message)
        elif kind == "progress":
            self.last_change = time.monotonic()
        elif kind in ("done", "cancelled"):
            yield from self._ended_run(kind, int(message.get("frames_done", 0)))
        elif kind == "error" and "frames_done" in message:  # the end of a failed propagation
            raise PropagationFailed(message.get("message") or "The propagation failed.")

    def _on_status(self, message: dict[str, Any]) -> Stream[Frame]:
        status = message["status"]
        if status in ENDED:
            raise _ended(status, message.get("message"))
        if status == "ready" and message.get("recovered"):  # a worker died; the session is rebuilt elsewhere
            yield from self._resume()
        elif status == "ready":  # a run ended: the record says how, if its end event did not come
            yield from self._resync()

    # --- the record (over REST, or in the socket's first message) ---

    def _resync(self) -> Stream[Frame]:
        body = yield from self.session._json("GET", self.session._path())
        self.session.info = SessionInfo.from_json(body)
        if not self.session.info.is_open:
            raise _ended(body["status"], body.get("error") or None)
        yield from self._on_record(body["status"], body.get("propagation") or {})

    def _on_record(self, status: str, record: dict[str, Any]) -> Stream[Frame]:
        if status in ENDED:
            raise _ended(status, None)
        if not record or record.get("started_at") != self.started_at:
            raise Sam3Error("Another propagation of this session replaced the one being followed.")
        state, frames_done = record.get("state"), int(record.get("frames_done") or 0)
        if state in ("done", "cancelled"):
            yield from self._ended_run(state, frames_done)
        elif state == "failed":
            raise PropagationFailed(record.get("error") or "The propagation failed.")
        elif state == "interrupted" and status == "ready":
            yield from self._resume()
        elif state == "running":
            due = self.order.due_until(self.run_start + frames_done)
            if due:
                yield from self._hand_over(due, None)

    def _ended_run(self, state: str, frames_done: int) -> Stream[Frame]:
        # done: every frame was delivered; cancelled: the first frames_done of this run were
        due = self.order.due_until(len(self.order.frames) if state == "done" else self.run_start + frames_done)
        if due:
            yield from self._hand_over(due, None)
        self.finished = True

    def _resume(self) -> Stream[Frame]:
        reply = yield from self.session._call(Call("POST", self.session._path("propagate/"), json={"resume": True}), accept=(409,))
        if reply.status == 409:
            error = error_from_reply(reply)
            if error.code != "nothing_to_resume":
                raise error
            yield from self._ended_run("done", 0)  # it had delivered every frame before the worker died
            return
        self.last_change = time.monotonic()
        self._follow(reply.json()["propagation"])

    # --- handing frames over ---

    def _hand_over(self, frames: list[int], live: Frame | None) -> Stream[Frame]:
        """Hand over ``frames`` in order: the last may have come over the socket (``live``), the others
        are read from the stored results."""
        stored = frames if live is None else frames[:-1]
        by_frame = (yield from self._stored(stored)) if stored else {}
        for frame in frames:
            value = live if live is not None and frame == live.frame else by_frame.get(frame)
            if value is None:
                raise Sam3Error(f"Frame {frame} of the propagation is not among the stored results.")
            self.order.handed += 1
            self.last_change = time.monotonic()
            yield Emit(value)

    def _stored(self, frames: list[int]) -> Op[dict[int, Frame]]:
        found: dict[int, Frame] = {}
        wanted = set(frames)
        low, high = min(frames), max(frames)
        start = low
        while start <= high:
            limit = min(PAGE_LIMIT, high - start + 1)
            page = yield from self.session._json(
                "GET", self.session._path("frames/"), params={"from_frame": start, "limit": limit}
            )
            items = [Frame.from_json(item) for item in page["results"]]
            found.update((item.frame, item) for item in items if item.frame in wanted)
            if len(items) < limit:
                break
            start = items[-1].frame + 1
        return found

    def _cancel(self) -> Op[None]:
        reply = yield from self.session._call(Call("POST", self.session._path("cancel/"), json={}), accept=(409, 410))
        if reply.status != 202 or self.socket is None or not reply.json().get("cancelling"):
            return
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while (left := deadline - time.monotonic()) > 0:  # until the worker stops: the session is ready again
            outcome = yield Receive(self.socket, left)
            if not isinstance(outcome, str):
                return
            message = json.loads(outcome)
            if message.get("type") in ("done", "cancelled", "error") and "frames_done" in message:
                return


def _ended(status: str, message: str | None) -> Sam3Error:
    return api_error(410, f"session_{status}", message or f"The session is {status}.")


class Session(SessionBase, SyncBound):
    """A video session (blocking methods). ``with client.sessions.create(video) as session:`` closes it at the end."""

    def __init__(self, config: ClientConfig, driver: SyncDriver, info: SessionInfo) -> None:
        super().__init__(config, info)
        self._driver = driver

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.info.is_open:
            self.close()


class AsyncSession(SessionBase, AsyncBound):
    """A video session (coroutine methods). ``async with await client.sessions.create(video) as session:``."""

    def __init__(self, config: ClientConfig, driver: AsyncDriver, info: SessionInfo) -> None:
        super().__init__(config, info)
        self._driver = driver

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.info.is_open:
            await self.close()
