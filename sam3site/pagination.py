"""One paginator for every list: ``limit``/``offset`` validated and bounded, never silently ignored."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

from sam3site.errors import InvalidInput

MAX_PAGE_SIZE = 1000
MAX_OFFSET = 10_000_000  # far beyond any list here, far below Postgres's bigint


def _bounded_int(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    given = request.query_params.getlist(name)
    if not given:
        return default
    if len(given) > 1:
        raise InvalidInput(f"`{name}` is given {len(given)} times; give it once.", code="invalid_pagination")
    raw = given[0]
    if raw == "":
        raise InvalidInput(f"`{name}` is empty: give an integer or leave it out.", code="invalid_pagination")
    try:
        value = int(raw, 10)
    except ValueError:
        raise InvalidInput(f"`{name}` must be an integer, got {raw[:40]!r}.", code="invalid_pagination") from None
    if not minimum <= value <= maximum:
        raise InvalidInput(
            f"`{name}` must be between {minimum} and {maximum}, got {value}.", code="invalid_pagination",
            detail={"parameter": name, "minimum": minimum, "maximum": maximum},
        )
    return value


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``limit`` in 1..MAX_PAGE_SIZE (default PAGE_SIZE), ``offset`` in 0..MAX_OFFSET; anything else is a 400."""

    max_limit = MAX_PAGE_SIZE

    def __init__(self, default_limit: int | None = None) -> None:
        if default_limit is not None:
            self.default_limit = default_limit

    def get_limit(self, request: Request) -> int:
        return _bounded_int(request, self.limit_query_param, default=self.default_limit or 50, minimum=1, maximum=self.max_limit)

    def get_offset(self, request: Request) -> int:
        return _bounded_int(request, self.offset_query_param, default=0, minimum=0, maximum=MAX_OFFSET)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, MAX_OFFSET)}
        for parameter in parameters:
            low, high = bounds[parameter["name"]]
            parameter["schema"] = {**parameter["schema"], "minimum": low, "maximum": high}
        return parameters
