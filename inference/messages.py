"""What crosses the seam between web processes and model workers, typed (web-safe: no model code).

* Session commands (web -> worker): one dataclass per operation, in a :class:`SessionMessage`
  addressed to a session. Celery carries them as JSON (``to_message``); the worker validates the
  JSON once (``SessionMessage.from_message``, pydantic) and then trusts the objects.
* Session events (worker or web -> the session's websocket clients): dataclasses whose
  ``to_message`` is exactly what the clients receive.
* Replies (worker -> web): ``<envelope JSON>\\n<result JSON>``. The envelope is small (``ok``,
  ``worker``, or the error) and the web reads only it; an image result is serialised once, by the
  worker, and goes to the client as these very bytes (the web splices in ``timings_ms.total``).
  Compact JSON never contains a raw newline, so the first one ends the envelope. The session
  replies' bodies are the TypedDicts below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, TypedDict

import orjson
from pydantic import Field, TypeAdapter

from inference.legs import Leg
from sam3site.errors import ApiError, Unavailable

# --- replies ---

# Non-string keys as JSON does them (stringified); numpy scalars/arrays as their values.
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_JSON_OPTIONS)


@dataclass(frozen=True)
class ImageReply:
    """An image result as the client receives it, less ``timings_ms.total`` (inserted at ``splice``)."""

    body: bytes
    splice: int
    worker: str

    def with_total(self, total_ms: float) -> bytes:
        return b"%s,\"total\":%s%s" % (self.body[: self.splice], dumps(round(total_ms, 2)), self.body[self.splice :])


def encode_image_result(result: dict[str, Any], worker: str) -> ImageReply:
    """The response body, ``timings_ms`` then ``worker`` last (as the API has always ordered them)."""
    timings = result["timings_ms"]
    body = dumps({**{k: v for k, v in result.items() if k != "timings_ms"}, "timings_ms": timings, "worker": worker})
    tail = b"},\"worker\":" + dumps(worker) + b"}"  # closes timings_ms: ``total`` goes right before it
    if not timings or not body.endswith(tail):
        raise ValueError("image result without timings_ms")  # cannot happen: ModelHost always reports them
    return ImageReply(body, len(body) - len(tail), worker)


def encode_reply(envelope: dict[str, Any], body: bytes = b"") -> bytes:
    return dumps(envelope) + b"\n" + body


def decode_reply(reply: bytes) -> tuple[dict[str, Any], bytes]:
    envelope, _, body = reply.partition(b"\n")
    return orjson.loads(envelope), body


def error_payload(error: ApiError) -> dict[str, Any]:
    return {"ok": False, "error": {"code": error.code, "message": error.message, "detail": error.detail, "status": error.status_code}}


def error_from_payload(error: dict[str, Any]) -> ApiError:
    return ApiError(error["message"], code=error["code"], detail=error.get("detail"), status=error["status"])


class SessionRecovering(Unavailable):
    code, message = "session_recovering", "The session's worker was lost; it is being rebuilt on another worker."


class Opened(TypedDict):
    frame_count: int


class FrameObjectsReply(TypedDict, total=False):
    frame: int
    objects: list[dict[str, Any]]  # {id, score, box, mask, label?} as on the websocket
    object_id: int  # points/box prompts: the object they made or refined


class ObjectsReply(TypedDict, total=False):
    removed: int
    objects: list[int]


class Accepted(TypedDict):
    accepted: bool


class Cancelling(TypedDict):
    cancelling: bool


class Closed(TypedDict):
    closed: bool


# --- session commands ---


@dataclass(frozen=True)
class VideoPrompt:
    """A prompt on one frame, as the API validated it (and as the prompt log keeps it)."""

    kind: Literal["text", "exemplar", "points"]
    frame: int
    text: str | None = None
    boxes: list[list[float]] = field(default_factory=list)
    box_labels: list[int] = field(default_factory=list)
    points: list[list[float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    object_id: int | None = None
    threshold: float | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> VideoPrompt:
        return _PROMPT.validate_python({k: v for k, v in payload.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class OpenSession:
    video_path: str
    epoch: int = 1  # the session's ownership epoch: the worker's writes and events for it carry it
    op: Literal["open"] = "open"


@dataclass(frozen=True)
class OpenLive:
    """A live session: frames pushed by the client (inference.live_frames), no video file."""

    store: bool = False  # keep every computed frame's result (the REST frames API) as propagation does
    mask_format: Literal["rle", "polygons", "png", "none"] = "rle"
    source_url: str | None = None  # frames read from this stream by the worker (inference.stream_urls), not pushed
    first_frame: int = 0  # rebuilt after its worker died: frames (a stream URL's seqs too) are numbered on from here
    epoch: int = 1  # as OpenSession's
    op: Literal["open_live"] = "open_live"


@dataclass(frozen=True)
class PromptSession:
    prompt: VideoPrompt
    op: Literal["prompt"] = "prompt"


@dataclass(frozen=True)
class RemoveObject:
    object_id: int
    op: Literal["remove_object"] = "remove_object"


@dataclass(frozen=True)
class ResetSession:
    op: Literal["reset"] = "reset"


@dataclass(frozen=True)
class Propagate:
    legs: list[Leg]
    op: Literal["propagate"] = "propagate"


@dataclass(frozen=True)
class CancelPropagation:
    op: Literal["cancel"] = "cancel"


@dataclass(frozen=True)
class CloseSession:
    op: Literal["close"] = "close"


SessionCommand = Annotated[
    OpenSession | OpenLive | PromptSession | RemoveObject | ResetSession | Propagate | CancelPropagation | CloseSession,
    Field(discriminator="op"),
]


@dataclass(frozen=True)
class SessionMessage:
    session_id: str
    command: SessionCommand

    def to_message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> SessionMessage:
        """Validated once, here at the worker's edge (pydantic.ValidationError on a malformed message)."""
        return _MESSAGE.validate_python(message)


_PROMPT = TypeAdapter(VideoPrompt)
_MESSAGE = TypeAdapter(SessionMessage)


# --- session events (to the session's websocket clients) ---


def _without_none(value: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(value).items() if v is not None}


@dataclass(frozen=True)
class StatusEvent:
    status: str
    lost_worker: str | None = None
    recovered: bool | None = None
    message: str | None = None
    stream: Literal["connected", "reconnecting"] | None = None  # stream URL sessions: the reader's connection
    attempt: int | None = None  # reconnecting: which attempt is next

    def to_message(self) -> dict[str, Any]:
        return {"type": "status", **_without_none(self)}


@dataclass(frozen=True)
class FrameEvent:
    frame: int
    objects: list[dict[str, Any]]

    def to_message(self) -> dict[str, Any]:
        return {"type": "frame", "frame": self.frame, "objects": self.objects}


@dataclass(frozen=True)
class ProgressEvent:
    frames_done: int
    last_frame: int

    def to_message(self) -> dict[str, Any]:
        return {"type": "progress", **asdict(self)}


@dataclass(frozen=True)
class PropagationEnded:
    outcome: Literal["done", "cancelled", "error"]
    frames_done: int
    message: str | None = None

    def to_message(self) -> dict[str, Any]:
        return {"type": self.outcome, "frames_done": self.frames_done, **({"message": self.message} if self.message else {})}


@dataclass(frozen=True)
class LiveFrameEvent:
    """A pushed frame's objects: ``seq`` and ``ts`` as the client sent them, ``frame`` the index among
    the frames computed (0, 1, 2...; the stored results' index)."""

    seq: int
    frame: int
    objects: list[dict[str, Any]]
    ts: float | None = None

    def to_message(self) -> dict[str, Any]:
        return {"type": "frame", **_without_none(self)}


@dataclass(frozen=True)
class LiveFrameError:
    """A pushed (or read) frame that could not be computed (not decodable, a different size...); the stream goes on."""

    seq: int
    code: str
    message: str

    def to_message(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message, "detail": {"seq": self.seq}}


SessionEvent = StatusEvent | FrameEvent | LiveFrameEvent | LiveFrameError | ProgressEvent | PropagationEnded
