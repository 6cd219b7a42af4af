from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView


class ApiRootView(APIView):
    """Entry point of the browsable API: where everything is."""

    anonymous_allowed = True

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        def link(name: str) -> str:
            return reverse(name, request=request)

        return Response(
            {
                "me": link("me"),
                "keys": link("apikey-list"),
                "users": link("user-list"),
                "uploads": link("upload-list"),
                "segment_image": link("segment-image"),
                "sessions": link("session-list"),
                "schema": link("schema"),
                "docs": link("swagger-ui"),
            }
        )
