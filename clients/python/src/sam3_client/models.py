"""Typed results. Each is built from the server's JSON (kept in ``raw`` where it is worth having)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import numpy as np

from sam3_client.masks import BoolArray, Mask, MaskFormat

Box = tuple[float, float, float, float]


def floats(values: Sequence[Any]) -> list[float]:
    """Coordinates as JSON numbers (numpy scalars and tuples welcome)."""
    return [float(v) for v in values]


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _box(values: list[float]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in values)
    return (x1, y1, x2, y2)


def _stack(masks: list[Mask], height: int, width: int) -> BoolArray:
    if not masks:
        return np.zeros((0, height, width), dtype=bool)
    return np.stack([mask.array for mask in masks])


@dataclass(frozen=True)
class Upload:
    id: str
    kind: Literal["image", "video"]
    original_name: str
    media_type: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    frame_count: int | None
    fps: float | None
    duration_seconds: float | None
    created_at: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Upload:
        return cls(
            id=data["id"], kind=data["kind"], original_name=data["original_name"], media_type=data["media_type"],
            sha256=data["sha256"], size_bytes=data["size_bytes"], width=data["width"], height=data["height"],
            frame_count=data.get("frame_count"), fps=data.get("fps"), duration_seconds=data.get("duration_seconds"),
            created_at=datetime.fromisoformat(data["created_at"]),
        )


@dataclass(frozen=True)
class Quota:
    requests_per_minute: int
    daily_requests: int | None
    max_concurrent_sessions: int
    max_upload_bytes: int


@dataclass(frozen=True)
class Usage:
    day: date
    api_key: str | None
    requests: int


@dataclass(frozen=True)
class Me:
    """The calling user, the key used (its public prefix), the effective quota and recent usage."""

    id: int
    username: str
    is_staff: bool
    api_key: str | None
    quota: Quota
    requests_today: int
    usage: list[Usage]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Me:
        return cls(
            id=data["id"], username=data["username"], is_staff=data["is_staff"], api_key=data.get("api_key"),
            quota=Quota(**data["quota"]), requests_today=data["requests_today"],
            usage=[Usage(date.fromisoformat(u["day"]), u.get("api_key"), u["requests"]) for u in data.get("usage", [])],
        )


@dataclass(frozen=True)
class Instance:
    """One object found by a prompt: its score, box ``(x1, y1, x2, y2)`` in image pixels and mask."""

    score: float
    box: Box
    mask: Mask


@dataclass(frozen=True)
class PromptResult:
    prompt: dict[str, Any]
    instances: list[Instance]
    object_score: float | None = None  # interactive prompts: probability the object is present
    height: int = field(default=0, repr=False)
    width: int = field(default=0, repr=False)

    @property
    def masks(self) -> BoolArray:
        """This prompt's masks as one ``(n, height, width)`` boolean array."""
        return _stack([i.mask for i in self.instances], self.height, self.width)


@dataclass(frozen=True)
class Timings:
    """Milliseconds: waiting for the model, computing, encoding masks, and the whole request."""

    queued: float
    compute: float
    postprocess: float
    total: float


@dataclass(frozen=True)
class SegmentResult:
    """The answer to :meth:`Client.segment`: one :class:`PromptResult` per prompt, in order."""

    sha256: str
    width: int
    height: int
    results: list[PromptResult]
    model: dict[str, Any]
    cache_hit: bool  # the image's features came from the worker's cache
    worker: str
    timings: Timings
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def instances(self) -> list[Instance]:
        """Every instance of every prompt."""
        return [instance for result in self.results for instance in result.instances]

    @property
    def masks(self) -> BoolArray:
        """All instances' masks as one ``(n, height, width)`` boolean array."""
        return _stack([i.mask for i in self.instances], self.height, self.width)

    @property
    def warning(self) -> str | None:
        """Set when the server runs the tiny random-weight model (its masks are meaningless)."""
        return self.model.get("warning")

    @classmethod
    def from_json(cls, data: dict[str, Any], mask_format: MaskFormat) -> SegmentResult:
        height, width = data["image"]["height"], data["image"]["width"]
        results = [
            PromptResult(
                prompt=result["prompt"],
                instances=[
                    Instance(float(i["score"]), _box(i["box"]), Mask(i["mask"], mask_format, height, width))
                    for i in result["instances"]
                ],
                object_score=result.get("object_score"), height=height, width=width,
            )
            for result in data["results"]
        ]
        timings = data["timings_ms"]
        return cls(
            sha256=data["image"]["sha256"], width=width, height=height, results=results, model=data["model"],
            cache_hit=data["cache_hit"], worker=data["worker"],
            timings=Timings(timings["queued"], timings["compute"], timings["postprocess"], timings["total"]), raw=data,
        )


@dataclass(frozen=True)
class TrackedObject:
    """An object on one video frame. ``label`` is the text prompt that found it (text prompts only)."""

    id: int
    score: float
    box: Box
    mask: Mask
    label: str | None = None


@dataclass(frozen=True)
class Frame:
    """One frame's objects: a prompt's answer, a propagated frame, or a stored result."""

    frame: int
    objects: list[TrackedObject]
    object_id: int | None = None  # points/box prompts: the object added or refined
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def object(self, object_id: int) -> TrackedObject | None:
        return next((o for o in self.objects if o.id == object_id), None)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Frame:
        objects = [
            TrackedObject(int(o["id"]), float(o["score"]), _box(o["box"]), Mask.from_rle(o["mask"]), o.get("label"))
            for o in data["objects"]
        ]
        return cls(int(data["frame"]), objects, data.get("object_id"), data)


@dataclass(frozen=True)
class LiveFrame:
    """One computed frame of a live session: ``seq`` is the number the client gave it, ``frame`` counts
    the frames computed (0, 1, 2...), ``ts`` echoes the time it was sent (unix seconds)."""

    seq: int
    frame: int
    ts: float | None
    objects: list[TrackedObject]
    masks_omitted: bool = False  # the client fell more than 64 frames behind in acknowledging
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def object(self, object_id: int) -> TrackedObject | None:
        return next((o for o in self.objects if o.id == object_id), None)

    @classmethod
    def from_json(cls, data: dict[str, Any], mask_format: MaskFormat, height: int, width: int) -> LiveFrame:
        objects = [
            TrackedObject(int(o["id"]), float(o["score"]), _box(o["box"]), Mask(o.get("mask"), mask_format, height, width), o.get("label"))
            for o in data["objects"]
        ]
        return cls(int(data["seq"]), int(data["frame"]), data.get("ts"), objects, bool(data.get("masks_omitted")), data)


@dataclass(frozen=True)
class Leg:
    """One pass of a propagation: frames ``first``, ``first ± 1``, … (``max_frames`` after it; None: to the end)."""

    reverse: bool
    first: int
    max_frames: int | None

    def frames(self, frame_count: int) -> range:
        if self.reverse:
            last = 0 if self.max_frames is None else max(0, self.first - self.max_frames)
            return range(self.first, last - 1, -1)
        last = frame_count - 1 if self.max_frames is None else min(frame_count - 1, self.first + self.max_frames)
        return range(self.first, last + 1)


def plan_legs(direction: str, start_frame: int, max_frames: int | None) -> list[Leg]:
    """The passes a propagation makes (as the server plans them; docs/video-sessions.md)."""
    legs = []
    if direction in ("forward", "both"):
        legs.append(Leg(False, start_frame, max_frames))
    if direction == "backward":
        legs.append(Leg(True, start_frame, max_frames))
    if direction == "both" and start_frame > 0:
        legs.append(Leg(True, start_frame - 1, max_frames))
    return legs


@dataclass(frozen=True)
class Propagation:
    direction: str
    start_frame: int
    max_frames: int | None
    state: Literal["running", "done", "cancelled", "interrupted", "failed"]
    frames_done: int
    last_frame: int | None
    legs: list[Leg]
    started_at: datetime | None
    finished_at: datetime | None
    resumed: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Propagation | None:
        if not data:
            return None
        legs = [Leg(bool(leg["reverse"]), int(leg["first"]), leg["max_frames"]) for leg in data.get("legs") or []]
        return cls(
            direction=data["direction"], start_frame=data["start_frame"], max_frames=data.get("max_frames"), state=data["state"],
            frames_done=data.get("frames_done", 0), last_frame=data.get("last_frame"),
            legs=legs or plan_legs(data["direction"], data["start_frame"], data.get("max_frames")),
            started_at=_time(data.get("started_at")), finished_at=_time(data.get("finished_at")), resumed=bool(data.get("resumed")),
        )


@dataclass(frozen=True)
class SessionPrompt:
    sequence: int
    kind: str
    frame_index: int | None
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class SessionInfo:
    """A video session's record: status, video, the worker holding it, propagation progress, and
    (from :meth:`Session.refresh`) its prompt log."""

    id: str
    video: str | None  # the upload; None for a live session (frames pushed by a client)
    status: Literal["starting", "ready", "propagating", "recovering", "closed", "expired", "failed"]
    worker: str
    frame_count: int
    fps: float | None
    width: int
    height: int
    propagation: Propagation | None
    error: str
    created_at: datetime
    last_activity_at: datetime | None
    closed_at: datetime | None
    frames_stored: int
    prompts: list[SessionPrompt] | None = None
    kind: Literal["video", "live"] = "video"

    @property
    def is_open(self) -> bool:
        return self.status not in ("closed", "expired", "failed")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionInfo:
        prompts = data.get("prompts")
        return cls(
            id=data["id"], video=data.get("video"), kind=data.get("kind", "video"), status=data["status"], worker=data.get("worker") or "",
            frame_count=data["frame_count"], fps=data.get("fps"), width=data["width"], height=data["height"],
            propagation=Propagation.from_json(data.get("propagation") or {}), error=data.get("error") or "",
            created_at=datetime.fromisoformat(data["created_at"]), last_activity_at=_time(data.get("last_activity_at")),
            closed_at=_time(data.get("closed_at")), frames_stored=data.get("frames_stored", 0),
            prompts=None if prompts is None else [
                SessionPrompt(p["sequence"], p["kind"], p.get("frame_index"), p["payload"], datetime.fromisoformat(p["created_at"]))
                for p in prompts
            ],
        )
