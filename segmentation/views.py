from __future__ import annotations

import time
from typing import Any

import orjson
from adrf.views import APIView
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
        request._request.upload_limit_bytes = quota_of_request(request).max_upload_bytes  # type: ignore[attr-defined]  # read by the handler
        if request.method == "POST":
            # Validation and the image lookup here, in the thread hop adrf makes for ``initial``
            # (with authentication and throttling), rather than one hop each from ``post``.
            started = time.perf_counter()
            try:
                data = validated(SegmentRequestSerializer, request.data)
                if "image" in data:
                    image = services.image_from_upload(owner=request.user, upload_id=data["image"])
                else:  # only the header is read: the worker decodes the image
                    image = services.inline_image_store(data["file"])
            except ApiError as error:
                REQUESTS.labels(endpoint="segment_image", outcome=error.code).inc()
                raise
            request._request.segment_input = (data, image, started)  # type: ignore[attr-defined]  # per-request attribute, for post

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
        data, image, started = request._request.segment_input  # type: ignore[attr-defined]  # set by initial
        try:
            response = await self._segment(request, data, image, started)
        except ApiError as error:
            REQUESTS.labels(endpoint="segment_image", outcome=error.code).inc()
            raise
        REQUESTS.labels(endpoint="segment_image", outcome="ok").inc()
        return response

    async def _segment(self, request: Request, data: dict[str, Any], image: services.ResolvedImage, started: float) -> HttpResponse:
        try:
            job = services.image_job_build(request_id=request._request.request_id, image=image, data=data)  # type: ignore[attr-defined]  # set by the middleware
            reply = await dispatch.run_image_job(job)
        finally:
            if "file" in data:
                services.inline_image_discard(image)
        # The worker's bytes go out as they are, with the total spliced in: no decoding and re-encoding.
        body = reply.with_total((time.perf_counter() - started) * 1000)
        if request.accepted_renderer.format != "json":  # the browsable API renders it as a page
            return Response(orjson.loads(body))
        return HttpResponse(body, content_type="application/json")
