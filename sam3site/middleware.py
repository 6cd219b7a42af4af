"""Request id and one log line per request."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from loguru import logger

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_for(sent: str) -> str:
    """The client's X-Request-ID when it is a sane one, else a new id."""
    return sent if _CLIENT_REQUEST_ID.match(sent) else uuid.uuid4().hex


class RequestLogMiddleware:
    """Assigns ``request.request_id`` (or keeps a sane client-sent X-Request-ID) and logs the outcome.

    ``request.api_key_label`` is filled by authentication with the key's public prefix, never the key.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = request_id_for(request.headers.get("X-Request-ID", ""))  # type: ignore[attr-defined]
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
