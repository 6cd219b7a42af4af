"""Typed errors. Every error the server answers has one body,
``{"error": {"code", "message", "detail", "request_id"}}``; it becomes the :class:`APIError` subclass
named for its ``code`` (or, for codes without a class of their own, for its HTTP status).

    try:
        client.segment("photo.jpg", text="dog")
    except sam3_client.RateLimited as error:
        print(error.code, error.retry_after, error.request_id)
"""

from __future__ import annotations

import json
from typing import Any


class Sam3Error(Exception):
    """Base of every error this package raises."""


class APIConnectionError(Sam3Error):
    """The server could not be reached, or the connection broke before an answer came."""


class APITimeoutError(APIConnectionError):
    """No answer within the client's timeout."""


class APIError(Sam3Error):
    """The server answered with an error.

    ``status`` is the HTTP status, ``code`` the machine-readable code (e.g. ``session_busy``),
    ``detail`` its structured context, ``request_id`` what to quote when reporting a problem, and
    ``retry_after`` the seconds the server asked to wait (429 and 503 answers).
    """

    status: int = 0

    def __init__(
        self, message: str, *, status: int, code: str, detail: Any = None, request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.message}"
        if self.detail and self.status == 400:
            text += f" {json.dumps(self.detail)[:500]}"
        return text + (f" (request id {self.request_id})" if self.request_id else "")


class BadRequest(APIError):
    """400: the request is invalid (``detail`` names the fields)."""


class InvalidPrompt(BadRequest):
    """400: a prompt the model cannot take: too long, outside the image, a frame past the video's end."""


class InvalidFile(BadRequest):
    """400: an empty, damaged, or wrong kind of file."""


class AuthenticationError(APIError):
    """401: no API key, or an unknown, revoked or expired one."""


class PermissionDenied(APIError):
    """403: the key may not do this."""


class NotFound(APIError):
    """404: the object does not exist, or is not yours."""


class Conflict(APIError):
    """409: the object's state does not allow this now."""


class SessionBusy(Conflict):
    """409: the session is propagating; cancel it or wait."""


class Gone(APIError):
    """410: the object has ended; only its record remains."""


class SessionEnded(Gone):
    """410: the video session was closed, expired or failed (``code`` says which)."""


class PayloadTooLarge(APIError):
    """413: the file or body exceeds a limit (``detail["limit_bytes"]``)."""


class UnsupportedMedia(APIError):
    """415: not a supported image or video, or a body type the endpoint does not take."""


class RateLimited(APIError):
    """429: the rate limit is exhausted; retry after ``retry_after`` seconds."""


class QuotaExceeded(RateLimited):
    """429: a quota (daily requests, concurrent sessions) is used up."""


class ServerError(APIError):
    """5xx: the server failed; quote ``request_id`` when reporting it."""


class ServiceUnavailable(ServerError):
    """503: the service cannot take the request now; retry after ``retry_after`` seconds."""


class Overloaded(ServiceUnavailable):
    """503: the model workers are busy, or too many sessions are open server-wide."""


class ModelUnavailable(ServiceUnavailable):
    """503: no model worker is ready, or the image/video model is turned off."""


class SessionRecovering(ServiceUnavailable):
    """503: the session's worker died and another one is rebuilding it."""


class DeadlineExceeded(ServerError):
    """504: the model did not compute the request before its deadline."""


class PropagationFailed(Sam3Error):
    """The worker reported that a propagation failed (an ``error`` event)."""


class PropagationStalled(APITimeoutError):
    """A propagation made no progress (no frame, no status change) for the stream's ``idle_timeout``."""


_BY_CODE: dict[str, type[APIError]] = {
    "prompt_too_long": InvalidPrompt,
    "outside_image": InvalidPrompt,
    "frame_out_of_range": InvalidPrompt,
    "not_refinable": Conflict,
    "empty_file": InvalidFile,
    "corrupt_file": InvalidFile,
    "not_an_image": InvalidFile,
    "not_a_video": InvalidFile,
    "session_busy": SessionBusy,
    "session_closed": SessionEnded,
    "session_expired": SessionEnded,
    "session_failed": SessionEnded,
    "daily_quota_exceeded": QuotaExceeded,
    "session_quota_exceeded": QuotaExceeded,
    "overloaded": Overloaded,
    "too_many_sessions": Overloaded,
    "model_unavailable": ModelUnavailable,
    "image_disabled": ModelUnavailable,
    "video_disabled": ModelUnavailable,
    "session_recovering": SessionRecovering,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict, 410: Gone,
    413: PayloadTooLarge, 415: UnsupportedMedia, 429: RateLimited, 503: ServiceUnavailable, 504: DeadlineExceeded,
}


def api_error(
    status: int, code: str, message: str, *, detail: Any = None, request_id: str | None = None, retry_after: float | None = None,
) -> APIError:
    """The typed error for an answer: by ``code`` first, then by HTTP status."""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(message, status=status, code=code, detail=detail, request_id=request_id, retry_after=retry_after)
