"""Frames a client pushes into a live session, from the websocket to the model worker (web-safe).

Wire format of one frame (one binary websocket message)::

    4 bytes    header length N, unsigned big-endian
    N bytes    header: UTF-8 JSON object {"seq": <int >= 0>, "ts": <number, optional>}
    the rest   the image: JPEG, PNG or WebP

Checked here, on the web side, before anything travels further: the header, the size in bytes,
the image format and its pixel count (read from the image header, nothing decoded).

Latest-wins: each live session has one frame *slot*. Pushing a frame replaces what the slot holds,
and a replaced frame was never computed: its sequence number is reported as skipped. The model
worker takes the slot when it is ready for the next frame. So nothing queues: at most one frame per
session waits, however fast the client sends. With Redis the slot is a hash and a worker-wide list
says which sessions have a frame waiting (a session is listed only when its slot goes from empty to
full, so the list holds each session at most once).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import orjson
from PIL import Image, UnidentifiedImageError

from sam3site import redis_clients
from sam3site.errors import InvalidInput

MAX_FRAME_BYTES = 3 * 1024 * 1024  # below daphne's hard websocket limit (4 MiB), which drops the connection
MAX_FRAME_PIXELS = 3840 * 2160  # 4K UHD
MAX_HEADER_BYTES = 1024
IMAGE_FORMATS = {"JPEG", "PNG", "WEBP"}
SLOT_SECONDS = 60  # an untaken frame (its worker gone) does not outlive this


@dataclass(frozen=True)
class LiveFrame:
    seq: int
    image: bytes
    ts: float | None = None
    width: int = 0
    height: int = 0


def parse_frame(message: bytes) -> LiveFrame:
    """The frame in one binary message, checked; InvalidInput (with a ``code``) when it is refused."""
    if len(message) > MAX_FRAME_BYTES:
        raise InvalidInput(
            f"A frame is at most {MAX_FRAME_BYTES} bytes; this one is {len(message)}.", code="frame_too_large",
            detail={"limit_bytes": MAX_FRAME_BYTES},
        )
    if len(message) < 4:
        raise InvalidInput("A frame starts with a 4-byte header length.", code="invalid_frame")
    (length,) = struct.unpack(">I", message[:4])
    if length > MAX_HEADER_BYTES or 4 + length > len(message):
        raise InvalidInput(f"The frame header length {length} is invalid (at most {MAX_HEADER_BYTES}).", code="invalid_frame")
    try:
        header = orjson.loads(message[4 : 4 + length])
    except orjson.JSONDecodeError:
        header = None
    seq = header.get("seq") if isinstance(header, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidInput('The frame header is a JSON object with "seq", an integer >= 0.', code="invalid_frame")
    ts = header.get("ts")
    if ts is not None and (not isinstance(ts, (int, float)) or isinstance(ts, bool)):
        raise InvalidInput('The frame header\'s "ts" is a number.', code="invalid_frame", detail={"seq": seq})
    image = message[4 + length :]
    try:
        with Image.open(io.BytesIO(image)) as probe:  # reads the header only
            image_format, (width, height) = probe.format, probe.size
    except (UnidentifiedImageError, OSError):
        image_format, width, height = None, 0, 0
    if image_format not in IMAGE_FORMATS:
        raise InvalidInput("A frame is a JPEG, PNG or WebP image.", code="unsupported_image", detail={"seq": seq})
    if width * height > MAX_FRAME_PIXELS:
        raise InvalidInput(
            f"A frame has at most {MAX_FRAME_PIXELS} pixels; this one is {width}x{height}.", code="frame_too_many_pixels",
            detail={"seq": seq, "limit_pixels": MAX_FRAME_PIXELS},
        )
    return LiveFrame(seq, image, None if ts is None else float(ts), width, height)


def encode_frame(seq: int, image: bytes, ts: float | None = None) -> bytes:
    """One binary websocket message carrying a frame (what clients send; the example client uses it)."""
    header = orjson.dumps({"seq": seq, **({"ts": ts} if ts is not None else {})})
    return struct.pack(">I", len(header)) + header + image


# --- the Redis slot (CeleryGateway deployments) ---


def slot_key(session_id: str) -> str:
    return redis_clients.key("live", "frame", session_id)


def ready_key(queue: str) -> str:
    """The worker's list of sessions whose slot holds a frame."""
    return redis_clients.key("live", "ready", queue)


# Replace the slot; list the session as ready when the slot was empty, or listed for another worker
# (its worker died: the session moved, and the frame left for the dead worker is taken by the new
# one); answer the replaced seq.
PUSH_SCRIPT = """
local replaced = redis.call('HGET', KEYS[1], 'seq')
local listed = redis.call('HGET', KEYS[1], 'ready')
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'meta', ARGV[2], 'image', ARGV[3], 'ready', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if not replaced or listed ~= KEYS[2] then redis.call('RPUSH', KEYS[2], ARGV[5]) end
redis.call('EXPIRE', KEYS[2], ARGV[4])  -- a dead worker's list goes with its last slot
return replaced
"""

TAKE_SCRIPT = """
local frame = redis.call('HMGET', KEYS[1], 'meta', 'image')
redis.call('DEL', KEYS[1])
return frame
"""


def frame_meta(frame: LiveFrame) -> bytes:
    return orjson.dumps({"seq": frame.seq, "ts": frame.ts, "width": frame.width, "height": frame.height})


def frame_from_slot(meta: bytes, image: bytes) -> LiveFrame:
    fields: dict[str, Any] = orjson.loads(meta)
    return LiveFrame(fields["seq"], image, fields["ts"], fields["width"], fields["height"])


async def push_to_redis(session_id: str, queue: str, frame: LiveFrame) -> int | None:
    """Put the frame in the session's slot; the sequence number of the frame it replaced, if any."""
    replaced = await redis_clients.async_client().eval(
        PUSH_SCRIPT, 2, slot_key(session_id), ready_key(queue), frame.seq, frame_meta(frame), frame.image, SLOT_SECONDS, session_id,
    )
    return None if replaced is None else int(replaced)
