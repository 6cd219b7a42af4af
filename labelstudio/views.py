"""Label Studio's ML backend protocol (label-studio-ml-backend's api.py), under /label-studio/.

Label Studio's model connection sends HTTP basic auth: the password is an API key (the user name is
free), so quotas, rate limits and usage apply as on the REST API. ``/health`` answers without the
model or a queue (Label Studio allows it 1 s); ``/webhook`` carries training events, which carry
nothing this server acts on, and is acknowledged without authentication.
"""

from __future__ import annotations

from typing import Any

from adrf.views import APIView
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import ApiKeyBasicAuthentication
from accounts.permissions import authenticated_user
from labelstudio import services
from labelstudio.label_config import parse_label_config
from labelstudio.serializers import PredictResponseSerializer, PredictSerializer, SetupSerializer
from sam3site.api import validated
from sam3site.schema import errors

TAGS = ["label-studio"]


class LabelStudioView(APIView):
    authentication_classes: list[type] = [ApiKeyBasicAuthentication]


class HealthView(LabelStudioView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(tags=TAGS, responses={200: dict}, summary="Label Studio: is the backend up")
    def get(self, request: Request) -> Response:
        return Response({"status": "UP", "model_class": "SAM3", "v2": True})


class SetupView(LabelStudioView):
    @extend_schema(tags=TAGS, request=SetupSerializer, responses={200: dict, **errors(400)}, summary="Label Studio: connect a project")
    def post(self, request: Request) -> Response:
        data = validated(SetupSerializer, request.data)
        if data.get("schema"):
            parse_label_config(data["schema"])  # an unsupported config is refused when connecting, not at the first click
        return Response({"model_version": services.MODEL_VERSION})


class VersionsView(LabelStudioView):
    @extend_schema(tags=TAGS, responses={200: dict}, summary="Label Studio: model versions")
    def get(self, request: Request) -> Response:
        return Response({"versions": [services.MODEL_VERSION]})


class PredictView(LabelStudioView):
    @extend_schema(
        tags=TAGS, request=PredictSerializer, responses={200: PredictResponseSerializer, **errors(404, 502, 503, 504)},
        summary="Label Studio: predict for tasks (interactive with a context, pre-annotation without)",
    )
    async def post(self, request: Request) -> Response:
        data: dict[str, Any] = validated(PredictSerializer, request.data)
        results = await services.predict(
            owner=authenticated_user(request), request_id=request._request.request_id,  # type: ignore[attr-defined]  # set by the middleware
            tasks=data["tasks"], label_config=data["label_config"], context=(data.get("params") or {}).get("context"),
        )
        return Response({"results": results})


class WebhookView(LabelStudioView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(tags=TAGS, request=None, responses={200: dict}, summary="Label Studio: training events (acknowledged, not acted on)")
    def post(self, request: Request) -> Response:
        return Response({"status": "ignored", "reason": "this backend does not train"})
