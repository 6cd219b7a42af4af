from __future__ import annotations

from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import authenticated_user
from accounts.services import quota_of_request
from sam3site.parsers import MultiPartParser
from sam3site.schema import binary_download, errors
from uploads import selectors, services
from uploads.models import Upload
from uploads.serializers import UploadCreateSerializer, UploadSerializer

SHA256_PARAMETER = OpenApiParameter(
    "sha256", str, pattern="^[0-9a-fA-F]{64}$",
    description="Only your uploads with this SHA-256 (hex) of their content: a client skips re-sending a file you already uploaded.",
)


@extend_schema_view(
    list=extend_schema(parameters=[SHA256_PARAMETER]),
    destroy=extend_schema(responses={204: None, **errors(409)}, summary="Delete the file"),
)
class UploadViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Your uploaded images and videos. Other clients' uploads do not exist for you (404)."""

    serializer_class = UploadSerializer
    parser_classes = [MultiPartParser]
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"
    queryset = Upload.objects.none()  # typed path parameter for the schema; requests use get_queryset

    def get_queryset(self) -> QuerySet[Upload]:
        sha256 = self.request.query_params.get("sha256") if self.action == "list" else None
        return selectors.uploads_of(owner=authenticated_user(self.request), sha256=sha256)

    def get_serializer_class(self) -> type:
        # The browsable API builds its upload form from this (it asks with a POST-cloned request).
        return UploadCreateSerializer if self.request.method == "POST" else UploadSerializer

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        super().initial(request, *args, **kwargs)
        # The caller is known now, before the body is parsed: bound the stream by their own limit.
        request._request.upload_limit_bytes = quota_of_request(request).max_upload_bytes  # type: ignore[attr-defined]  # read by the handler

    @extend_schema(request=UploadCreateSerializer, responses={201: UploadSerializer}, summary="Upload a file")
    def create(self, request: Request) -> Response:
        serializer = UploadCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = services.upload_create(owner=authenticated_user(request), uploaded_file=serializer.validated_data["file"])
        return Response(UploadSerializer(upload).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: Upload) -> None:
        services.upload_delete(upload=instance)

    @extend_schema(responses=binary_download(), summary="Download the file (served as the media type it was probed as)")
    @action(detail=True, methods=["get"])
    def content(self, request: Request, pk: str | None = None) -> FileResponse:
        upload = self.get_object()
        return FileResponse(upload.path.open("rb"), content_type=upload.media_type, as_attachment=False)
