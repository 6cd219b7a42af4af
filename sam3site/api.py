"""Small helpers shared by the API views and websocket consumers."""

from __future__ import annotations

from typing import Any

from rest_framework.serializers import Serializer


def validated(serializer_class: type[Serializer], data: Any) -> dict[str, Any]:
    """``serializer_class``'s validated data, or DRF's ValidationError (mapped to our 400 body)."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
