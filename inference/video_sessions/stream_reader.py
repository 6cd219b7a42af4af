"""Live sessions whose frames come from a stream URL: a reader thread per session decodes the stream
with PyAV and leaves each frame in the session's latest-wins slot, exactly where a client's pushed
frames go (:mod:`inference.live_frames`). The frame pump computes them as pushed frames, so a
client watching the live websocket gets the same ``frame`` and ``skipped`` events.

* ``seq`` counts the frames read (0, 1, 2..., on across reconnections); ``ts`` is the frame's time
  in the stream, in seconds.
* A file (MP4, a finished HLS playlist) is read at its own frame rate, as a camera would deliver it,
  and ends the session (``closed``) at its end.
* A lost connection (an error, or the end of a stream without a duration: a camera, MJPEG) is
  retried ``RECONNECT_ATTEMPTS`` times with growing pauses, each told to the clients as a status
  event ``{"status": "ready", "stream": "reconnecting", "attempt": n, "message": ...}`` and a
  success as ``"stream": "connected"``. When the attempts are spent the session ends: ``closed``
  after an end of stream, ``failed`` after errors. A URL refused by the address check
  (:mod:`inference.stream_urls`, run again before every connection) fails it at once.
* Closing the session stops the reader (at the latest after the read timeout).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import cv2
from loguru import logger

from inference.live_frames import MAX_FRAME_PIXELS, LiveFrame
from inference.messages import StatusEvent
from inference.session_store import CLOSED, FAILED, READY
from inference.stream_urls import StreamUrlRefused, redact, resolve_redirects, scrub

OPEN_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 10.0
RECONNECT_ATTEMPTS = 5
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
SKIPPED_EVERY_SECONDS = 0.5  # replaced frames are reported in batches, not one event per frame
JPEG_QUALITY = 90  # the slot carries encoded images, as clients push them
RESYNC_SECONDS = 2.0  # a jump in the stream's clock larger than this restarts the pacing
# Network protocols only: no file://, concat:, subfile: and the like reached through a playlist.
PROTOCOLS = "http,https,tls,tcp,udp,rtp,srtp,rtsp,rtsps,rtmp,rtmps,rtmpt,rtmpts,rtmpe,hls,crypto,httpproxy"


class StreamReader:
    def __init__(
        self,
        session_id: str,
        url: str,
        *,
        allowlist: list[str],
        put: Callable[[LiveFrame], int | None],
        publish: Callable[[dict[str, Any]], None],
        end: Callable[[str, str, int | None], None],
        first_seq: int = 0,
    ) -> None:
        self.session_id = session_id
        self.url = url
        self.allowlist = allowlist
        self._put = put  # into the slot; answers the replaced frame's seq
        self._publish = publish  # an event to the session's clients
        self._end = end  # (status, message, the last seq read): the session ends once that frame is answered
        self._stop = threading.Event()
        self._seq = first_seq
        self._skipped: list[int] = []
        self._skipped_at = 0.0

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"stream-{self.session_id[:8]}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            first_seq = self._seq
            try:
                finite = self._read_once()
                ended, message = True, "The stream ended."
                if finite:
                    break
            except StreamUrlRefused as refused:
                self._finish(FAILED, refused.message)
                return
            except Exception as error:  # noqa: BLE001 - a lost stream (or anything else) is retried, then reported
                ended = False
                message = scrub(getattr(error, "message", None) or f"{type(error).__name__}: {error}", self.url)
            if self._stop.is_set():
                return
            failures = 1 if self._seq > first_seq else failures + 1  # a connection that delivered resets the count
            if failures > RECONNECT_ATTEMPTS:
                self._finish(CLOSED if ended else FAILED, message)
                return
            logger.info("Stream of session {} lost ({}); reconnecting, attempt {}", self.session_id, message, failures)
            self._publish(StatusEvent(READY, stream="reconnecting", attempt=failures, message=message).to_message())
            self._stop.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS)) - 1])
        else:
            return  # stopped: the session was closed
        self._finish(CLOSED, message)

    def _finish(self, status: str, message: str) -> None:
        self._flush_skipped(force=True)
        if not self._stop.is_set():
            logger.info("Stream {} of session {} is over: {} ({})", redact(self.url), self.session_id, status, message)
            self._end(status, message, self._seq - 1 if self._seq else None)

    def _read_once(self) -> bool:
        """Connect and read until the stream ends; whether the source has a duration (a file)."""
        url = resolve_redirects(self.url, self.allowlist)  # every connection is checked anew
        options = {"protocol_whitelist": PROTOCOLS}
        if url.lower().startswith("http"):
            options["max_redirects"] = "0"  # ffmpeg must not follow a redirect the check above did not see
        elif url.lower().startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
        with av.open(url, options=options, timeout=(OPEN_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)) as container:
            if not container.streams.video:
                raise StreamUrlRefused("The stream has no video.", code="stream_without_video")
            self._publish(StatusEvent(READY, stream="connected").to_message())
            origin: tuple[float, float] | None = None  # (monotonic, stream time) pacing starts from
            for frame in container.decode(container.streams.video[0]):
                if self._stop.is_set():
                    break
                if frame.time is not None:  # deliver at the stream's rate (a file decodes far faster)
                    if origin is None or abs(frame.time - origin[1] - (time.monotonic() - origin[0])) > RESYNC_SECONDS:
                        origin = (time.monotonic(), frame.time)
                    delay = origin[0] + frame.time - origin[1] - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                self._deliver(frame)
            return container.duration is not None

    def _deliver(self, frame: av.VideoFrame) -> None:
        width, height = frame.width, frame.height
        if width * height > MAX_FRAME_PIXELS:  # as a pushed frame would be refused: scaled down instead
            scale = math.sqrt(MAX_FRAME_PIXELS / (width * height))
            width, height = int(width * scale) // 2 * 2, int(height * scale) // 2 * 2
        image = frame.to_ndarray(format="bgr24", width=width, height=height)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("a frame could not be encoded")
        replaced = self._put(LiveFrame(self._seq, encoded.tobytes(), frame.time, width, height))
        self._seq += 1
        if replaced is not None:
            self._skipped.append(replaced)
        self._flush_skipped()

    def _flush_skipped(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._skipped and (force or now - self._skipped_at >= SKIPPED_EVERY_SECONDS):
            self._publish({"type": "skipped", "seqs": self._skipped})
            self._skipped, self._skipped_at = [], now
