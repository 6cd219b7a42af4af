"""One error hierarchy and one JSON shape for every API error.

Body: ``{"error": {"code": "<machine-readable>", "message": "<for humans>", "detail": ..., "request_id": ...}}``.
Services raise :class:`ApiError` subclasses; DRF's and Django's own exceptions are mapped here once.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, HttpRequest, JsonResponse
from django_ratelimit.exceptions import Ratelimited
from loguru import logger
from rest_framework import exceptions as drf
from rest_framework.response import Response


class ApiError(Exception):
    status_code = 400
    code = "bad_request"
    message = "The request is invalid."

    def __init__(
        self, message: str | None = None, *, code: str | None = None, detail: Any = None, retry_after: int | None = None,
        status: int | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.status_code = status or self.status_code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(self.message)


class InvalidInput(ApiError):
    status_code, code, message = 400, "invalid", "The request is invalid."


class AuthenticationRequired(ApiError):
    status_code, code, message = 401, "authentication_required", "An API key is required (X-API-Key header)."


class Forbidden(ApiError):
    status_code, code, message = 403, "forbidden", "You may not do this."


class NotFound(ApiError):
    status_code, code, message = 404, "not_found", "Not found."


class Conflict(ApiError):
    status_code, code, message = 409, "conflict", "The request conflicts with the current state."


class Gone(ApiError):
    status_code, code, message = 410, "gone", "The resource has ended; only its record remains."


class PayloadTooLarge(ApiError):
    status_code, code, message = 413, "payload_too_large", "The upload is too large."


class UnsupportedMedia(ApiError):
    status_code, code, message = 415, "unsupported_media_type", "The file is not a supported image or video."


class RateLimited(ApiError):
    status_code, code, message = 429, "rate_limited", "Too many requests."


class Unavailable(ApiError):
    status_code, code, message = 503, "unavailable", "The service is temporarily unavailable."


class ModelUnavailable(Unavailable):
    code, message = "model_unavailable", "No model worker is ready."


class Overloaded(Unavailable):
    code, message = "overloaded", "The model workers are busy; retry later."


class DatabaseUnavailable(Unavailable):
    code, message = "database_unavailable", "The database is unreachable or out of connections; retry later."


class DeadlineExceeded(ApiError):
    status_code, code, message = 504, "deadline_exceeded", "The request was not computed before its deadline."


_DRF_CODES: dict[type[drf.APIException], str] = {
    drf.ValidationError: "invalid",
    drf.ParseError: "malformed_request",
    drf.NotAuthenticated: "authentication_required",
    drf.AuthenticationFailed: "authentication_failed",
    drf.PermissionDenied: "forbidden",
    drf.NotFound: "not_found",
    drf.MethodNotAllowed: "method_not_allowed",
    drf.NotAcceptable: "not_acceptable",
    drf.UnsupportedMediaType: "unsupported_content_type",
    drf.Throttled: "rate_limited",
}


def error_body(code: str, message: str, detail: Any = None, request_id: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail, "request_id": request_id}}


def _request_id(context: dict[str, Any]) -> str | None:
    request = context.get("request")
    return getattr(request, "request_id", None) if request is not None else None


def _respond(error: ApiError, request_id: str | None) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    if error.status_code == 401:
        headers["WWW-Authenticate"] = "X-API-Key"
    body = error_body(error.code, error.message, error.detail, request_id)
    return Response(body, status=error.status_code, headers=headers)


DATABASE_RETRY_AFTER_SECONDS = 5


def _request_limit_error(error: RequestDataTooBig | TooManyFieldsSent | TooManyFilesSent) -> ApiError:
    """Django's own request limits, in our hierarchy (unmapped, they would surface as 500)."""
    if isinstance(error, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return PayloadTooLarge(
            f"The request's non-file data exceeds {limit // 1024} KiB.", code="request_too_large",
            detail={"limit_bytes": limit},
        )
    if isinstance(error, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return InvalidInput(f"The request has more than {limit} fields.", code="too_many_fields", detail={"limit": limit})
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
    return InvalidInput(f"The request has more than {limit} files.", code="too_many_files", detail={"limit": limit})


def as_api_error(exc: Exception) -> ApiError | None:
    """Translate any known exception into our hierarchy; ``None`` for unexpected ones."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestDataTooBig | TooManyFieldsSent | TooManyFilesSent):
        return _request_limit_error(exc)
    if isinstance(exc, DatabaseOperationalError | DatabaseInterfaceError):
        logger.warning("Database unavailable: {}", str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__)
        return DatabaseUnavailable(retry_after=DATABASE_RETRY_AFTER_SECONDS)
    if isinstance(exc, Ratelimited):  # subclasses PermissionDenied: must come first
        return RateLimited(retry_after=60)
    if isinstance(exc, Http404):
        return NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return Forbidden()
    if isinstance(exc, drf.APIException):
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
        if isinstance(exc, drf.ValidationError):
            return InvalidInput("Some fields are invalid.", detail=exc.detail)
        mapped = ApiError(str(exc.detail), code=code, status=exc.status_code)
        if isinstance(exc, drf.Throttled):
            wait: float | None = exc.wait  # type: ignore[attr-defined]  # drf-stubs lack Throttled.wait (set in __init__)
            if wait is not None:
                mapped.retry_after = max(1, int(wait + 0.999))
        return mapped
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    request_id = _request_id(context)
    if isinstance(exc, drf.Throttled):  # the throttle's own reason and code (accounts.throttling)
        exc = getattr(context.get("request"), "throttle_refusal", None) or exc
    error = as_api_error(exc)
    if error is None:
        logger.opt(exception=exc).error("Unhandled error in request {}", request_id)
        error = ApiError("Internal server error; quote the request id when reporting it.", code="internal_error", status=500)
    return _respond(error, request_id)


def json_error_view(status: int, code: str, message: str):  # noqa: ANN201 - Django handler factory
    def view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
        return JsonResponse(error_body(code, message, request_id=getattr(request, "request_id", None)), status=status)

    return view
