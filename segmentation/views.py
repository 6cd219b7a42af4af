from __future__ import annotations

import time
from typing import Any

import orjson
from adrf.views import APIView
from asgiref.sync import sync_to_async
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.services import quota_of_request
from inference import dispatch
from inference.metrics import REQUESTS
from sam3site.api import validated
from sam3site.errors import ApiError
from sam3site.parsers import JSONParser, MultiPartParser
from sam3site.schema import errors
from segmentation import services
from segmentation.serializers import SegmentFormSerializer, SegmentRequestSerializer, SegmentResponseSerializer


class SegmentImageView(APIView):
    """Segment one image with one or more prompts.

    Concept prompts (`text` and/or exemplar `boxes`) return every matching instance; interactive
    prompts (`points` and/or one `box`) return one object, SAM-style. Masks come as COCO RLE by
    default. Anonymous clients may post a `file` when REQUIRE_API_KEY is off.
    """

    anonymous_allowed = True
    parser_classes = [JSONParser, MultiPartParser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        request._request.upload_limit_bytes = quota_of_request(request).max_upload_bytes

    @extend_schema(
        request={"application/json": SegmentRequestSerializer, "multipart/form-data": SegmentFormSerializer},
        responses={200: SegmentResponseSerializer, **errors(404, 503, 504)},
        examples=[
            OpenApiExample(
                "Text prompt on an uploaded image",
                value={"image": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "prompts": [{"text": "yellow school bus"}]},
                request_only=True,
            ),
            OpenApiExample(
                "Clicks on one object",
                value={"image": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "prompts": [{"points": [[320, 240]], "point_labels": [1]}]},
                request_only=True,
            ),
        ],
    )
    async def post(self, request: Request) -> HttpResponse:
        started = time.perf_counter()
        try:
            response = await self._segment(request, started)
        except ApiError as error:
            REQUESTS.labels(endpoint="segment_image", outcome=error.code).inc()
            raise
        REQUESTS.labels(endpoint="segment_image", outcome="ok").inc()
        return response

    async def _segment(self, request: Request, started: float) -> HttpResponse:
        data = await sync_to_async(validated, thread_sensitive=False)(SegmentRequestSerializer, request.data)
        if "image" in data:
            image = await sync_to_async(services.image_from_upload)(owner=request.user, upload_id=data["image"])
        else:  # reading the image's header: off the event loop (the worker decodes it)
            image = await sync_to_async(services.inline_image_store, thread_sensitive=False)(data["file"])
        try:
            job = services.image_job_build(request_id=request._request.request_id, image=image, data=data)
            reply = await dispatch.run_image_job(job)
        finally:
            if "file" in data:
                services.inline_image_discard(image)
        # The worker's bytes go out as they are, with the total spliced in: no decoding and re-encoding.
        body = reply.with_total((time.perf_counter() - started) * 1000)
        if request.accepted_renderer.format != "json":  # the browsable API renders it as a page
            return Response(orjson.loads(body))
        return HttpResponse(body, content_type="application/json")
