from __future__ import annotations

from rest_framework import serializers

from uploads.models import Upload


class UploadSerializer(serializers.ModelSerializer):
    class Meta:
        model = Upload
        fields = (
            "id", "kind", "original_name", "media_type", "sha256", "size_bytes", "width", "height",
            "frame_count", "fps", "duration_seconds", "created_at",
        )
        read_only_fields = fields


class UploadCreateSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="An image (JPEG, PNG, WebP, BMP, TIFF) or a video (MP4/MOV, MKV, WebM, AVI, MPEG). "
        "The format is detected from the content.",
        allow_empty_file=True,  # empty files get our own, more specific error
    )
