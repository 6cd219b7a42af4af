"""Request id + one log line per request; the upload bound enforced on the raw ASGI body stream."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from loguru import logger

from sam3site.errors import error_body

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestLogMiddleware:
    """Assigns ``request.request_id`` (or keeps a sane client-sent X-Request-ID) and logs the outcome.

    ``request.api_key_label`` is filled by authentication with the key's public prefix, never the key.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sent = request.headers.get("X-Request-ID", "")
        request.request_id = sent if _CLIENT_REQUEST_ID.match(sent) else uuid.uuid4().hex  # type: ignore[attr-defined]
        started = time.perf_counter()
        response = self.get_response(request)
        duration_ms = (time.perf_counter() - started) * 1000
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        if request.path not in ("/healthz", "/readyz"):
            logger.info(
                "{} {} {} {:.1f}ms request_id={} key={}",
                request.method,
                request.path,
                response.status_code,
                duration_ms,
                request.request_id,  # type: ignore[attr-defined]
                getattr(request, "api_key_label", "-"),
            )
        return response


class UploadSizeLimitMiddleware:
    """ASGI middleware: refuses bodies over MAX_UPLOAD_SIZE_MB while they stream in.

    Django's ASGI handler spools the whole body before any view runs, so the hard bound has to sit
    in front of it: a declared Content-Length over the bound is refused before a byte is read, and a
    chunked body is cut off as soon as it crosses the bound. Per-user (smaller) limits are enforced
    later by the upload handler, also chunk by chunk.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = settings.MAX_UPLOAD_BYTES + 1024 * 1024  # room for multipart framing and fields
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, int(declared), limit)
            return

        received = 0
        exceeded = False

        async def bounded_receive() -> dict[str, Any]:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}  # Django stops reading and drops the request
            return message

        await self.app(scope, bounded_receive, send)
        if exceeded:
            await self._refuse(send, received, limit)

    @staticmethod
    async def _refuse(send: Callable, size: int, limit: int) -> None:
        body = json.dumps(
            error_body(
                "payload_too_large",
                f"The request body exceeds the upload limit of {settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MiB.",
                {"limit_bytes": settings.MAX_UPLOAD_BYTES, "received_bytes_at_least": size},
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
