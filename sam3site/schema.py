"""The OpenAPI schema's shared parts: the one error body, the error responses every operation can
give, the media types of downloads, and paginated lists for views that paginate by hand.

:class:`ApiAutoSchema` (settings ``DEFAULT_SCHEMA_CLASS``) adds to each operation the errors that
follow from what it is: authenticated (401, 403), throttled (429), takes a body (400, 413, 415) or
query parameters (400), addresses an object by path (404). Errors particular to an operation (a
model that may be unavailable, a session in the wrong state) are declared beside it with
:func:`errors`. ``tests/test_contract.py`` checks all of it against a live server.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from sam3site.pagination import MAX_OFFSET, MAX_PAGE_SIZE
from uploads.probing import IMAGE_MEDIA_TYPES, VIDEO_CONTAINERS


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable, e.g. `invalid`, `session_not_found`, `rate_limited`.")
    message = serializers.CharField(help_text="For humans: names the problem.")
    detail = serializers.JSONField(allow_null=True, help_text="Structured context (e.g. the invalid fields); null when none.")
    request_id = serializers.CharField(allow_null=True, help_text="Quote it when reporting a problem (X-Request-ID).")


class ErrorResponseSerializer(serializers.Serializer):
    """The body of every error response (``sam3site.errors.error_body``)."""

    error = ErrorSerializer()


ERROR_DESCRIPTIONS = {
    400: "The request is invalid: malformed, a field or parameter out of bounds (`detail` names them).",
    401: "No API key, or an unknown, revoked or expired one (X-API-Key header).",
    403: "The key may not do this (e.g. staff-only endpoints).",
    404: "The object does not exist, or is not yours.",
    409: "The object's current state does not allow this (e.g. a session that is propagating or closed).",
    410: "The object existed but is gone for good.",
    413: "The request body exceeds the upload limit (MAX_UPLOAD_SIZE_MB or the user's quota).",
    415: "The body's Content-Type is not accepted, or the file is not a supported image or video.",
    429: "The rate limit or a quota is exhausted; retry after `Retry-After` seconds.",
    502: "A server this one fetches from (Label Studio) could not be reached or refused its credentials.",
    503: "No model worker can take the request now (loading, busy, the session being recovered, limits).",
    504: "The model worker did not answer before the request's deadline.",
}
RETRY_AFTER_STATUSES = ("429", "503")
RETRY_AFTER_HEADER = {
    "Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "Seconds to wait before retrying."}
}


def error_response(status: int) -> OpenApiResponse:
    return OpenApiResponse(ErrorResponseSerializer, description=ERROR_DESCRIPTIONS[status])


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """Error responses particular to one operation, for ``@extend_schema(responses={..., **errors(409)})``."""
    return {status: error_response(status) for status in statuses}


# What GET /uploads/{id}/content/ answers with: the media type the upload's content was probed as.
UPLOAD_MEDIA_TYPES: tuple[str, ...] = tuple(
    dict.fromkeys([*IMAGE_MEDIA_TYPES.values(), *(media_type for media_type, _ in VIDEO_CONTAINERS.values())])
)


def binary_download(status: int = 200) -> dict[tuple[int, str], Any]:
    return {(status, media_type): OpenApiTypes.BINARY for media_type in UPLOAD_MEDIA_TYPES}


PAGINATION_PARAMETERS = [
    OpenApiParameter(
        "limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}, description="Number of results to return per page."
    ),
    OpenApiParameter(
        "offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        description="The initial index from which to return the results.",
    ),
]


def paginated(serializer_class: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The ``{count, next, previous, results}`` page of ``serializer_class``, as BoundedLimitOffsetPagination answers."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return type(
        f"Paginated{name}ListSerializer",
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
            "__module__": serializer_class.__module__,
        },
    )


class ApiAutoSchema(AutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        for status in self._implied_error_statuses(operation):
            responses.setdefault(str(status), self._error_response(status))
        for retry_status in RETRY_AFTER_STATUSES:
            if retry_status in responses:
                responses[retry_status].setdefault("headers", {}).update(RETRY_AFTER_HEADER)
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def get_auth(self) -> list[dict[str, list[str]]]:
        auth = super().get_auth()
        if getattr(self.view, "anonymous_allowed", False) and {} not in auth:
            auth.append({})  # with REQUIRE_API_KEY=False the view also serves clients without a key
        return auth

    def _implied_error_statuses(self, operation: dict[str, Any]) -> set[int]:
        statuses: set[int] = set()
        if self.view.get_permissions():  # ApiKeyPolicy and friends: a key is checked, staff-only views refuse
            statuses |= {401, 403}
        if self.view.get_throttles():
            statuses.add(429)
        if "requestBody" in operation:
            statuses |= {400, 413, 415}
        locations = {parameter["in"] for parameter in operation.get("parameters", [])}
        if "query" in locations:
            statuses.add(400)
        if "path" in locations:
            statuses.add(404)
        return statuses

    def _error_response(self, status: int) -> dict[str, Any]:
        component = self.resolve_serializer(ErrorResponseSerializer, "response")
        return {"content": {"application/json": {"schema": component.ref}}, "description": ERROR_DESCRIPTIONS[status]}
