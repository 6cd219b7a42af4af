"""Request parsers that refuse what the database or Python would choke on, as 4xx, before any view runs.

Limits (documented in README "Request limits"): a JSON body or a multipart text field at most
DATA_UPLOAD_MAX_MEMORY_SIZE (2 MiB), JSON nested at most MAX_JSON_DEPTH levels, at most
DATA_UPLOAD_MAX_NUMBER_FIELDS fields and DATA_UPLOAD_MAX_NUMBER_FILES files per form, and no NUL
character in any string (Postgres cannot store it in text or JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadedfile import UploadedFile
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from sam3site.errors import InvalidInput

MAX_JSON_DEPTH = 32


def check_json_value(value: Any, *, where: str = "the request") -> None:
    """Refuse NUL characters (in keys and strings) and nesting deeper than MAX_JSON_DEPTH, without recursion."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidInput(f"A string in {where} contains a NUL character (\\u0000).", code="nul_character")
            continue
        if not isinstance(item, Mapping | list | tuple):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _too_deep(where)
        children: Iterable[Any] = [*item.keys(), *item.values()] if isinstance(item, Mapping) else item
        pending.extend((child, depth + 1) for child in children)


def _too_deep(where: str) -> InvalidInput:
    return InvalidInput(f"The JSON in {where} is nested too deeply (at most {MAX_JSON_DEPTH} levels).", code="too_deeply_nested")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def loads_checked(text: str, *, where: str = "the request") -> Any:
    """``json.loads`` with the parsers' rules, for JSON carried inside a form field.
    Raises ValueError for text that is no JSON (the caller's field reports it)."""
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep(where) from None
    check_json_value(parsed, where=where)
    return parsed


class _CheckedFormParser(parsers.BaseParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        # What the form parsers below give (FormParser: the fields; MultiPartParser: fields and files).
        # Django's own limits (RequestDataTooBig, TooManyFieldsSent...) are mapped by sam3site.errors.
        parsed = cast(
            "QueryDict | parsers.DataAndFiles[QueryDict, MultiValueDict[str, UploadedFile]]",
            super().parse(stream, media_type, parser_context),
        )
        data, files = (parsed.data, parsed.files) if isinstance(parsed, parsers.DataAndFiles) else (parsed, None)
        for key, values in data.lists():
            check_json_value([key, *values], where=f"field {key[:40]!r}")
        for _key, uploads in files.lists() if files is not None else ():
            check_json_value([uploaded.name or "" for uploaded in uploads], where="a file name")
        return parsed


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise RequestDataTooBig()  # answered 413 request_too_large by sam3site.errors
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return loads_checked(body.decode(encoding))
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None


class FormParser(_CheckedFormParser, parsers.FormParser):
    pass


class MultiPartParser(_CheckedFormParser, parsers.MultiPartParser):
    pass
