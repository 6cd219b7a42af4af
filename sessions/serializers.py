from __future__ import annotations

from typing import Any

from rest_framework import serializers

from segmentation.serializers import PromptSerializer
from sessions.models import SessionPrompt, VideoSession


class SessionPromptSerializer(serializers.ModelSerializer):
    class Meta:
        model = SessionPrompt
        fields = ("sequence", "kind", "frame_index", "payload", "created_at")


class VideoSessionSerializer(serializers.ModelSerializer):
    video = serializers.UUIDField(source="video_id", read_only=True)
    frames_stored = serializers.IntegerField(read_only=True, source="frame_results.count")

    class Meta:
        model = VideoSession
        fields = (
            "id", "video", "status", "worker", "frame_count", "fps", "width", "height", "propagation", "error",
            "created_at", "last_activity_at", "closed_at", "frames_stored",
        )
        read_only_fields = fields


class VideoSessionDetailSerializer(VideoSessionSerializer):
    prompts = SessionPromptSerializer(many=True, read_only=True)

    class Meta(VideoSessionSerializer.Meta):
        fields = (*VideoSessionSerializer.Meta.fields, "prompts")
        read_only_fields = fields


class SessionCreateSerializer(serializers.Serializer):
    video = serializers.UUIDField(help_text="Id of one of your uploaded videos.")


class VideoPromptSerializer(PromptSerializer):
    """A prompt on one frame. Text: SAM3 concept tracking. Exemplar boxes: instances like them on
    this frame become tracked objects. Points / box: a new object, or with `object_id` a refinement."""

    frame = serializers.IntegerField(min_value=0, help_text="The frame the prompt is given on.")
    object_id = serializers.IntegerField(required=False, min_value=0, help_text="Points/box: the object to refine.")
    threshold = serializers.FloatField(required=False, min_value=0.0, max_value=1.0, help_text="Exemplar boxes: minimum score.")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        data = super().validate(data)
        if "points" in data or "box" in data:
            kind = SessionPrompt.Kind.POINTS
        elif "boxes" in data:
            kind = SessionPrompt.Kind.EXEMPLAR
        else:
            kind = SessionPrompt.Kind.TEXT
        if "object_id" in data and kind != SessionPrompt.Kind.POINTS:
            raise serializers.ValidationError({"object_id": "only points/box prompts act on an object"})
        data.pop("multimask", None)
        return {**data, "kind": kind}


class ObjectSerializer(serializers.Serializer):
    object_id = serializers.IntegerField(min_value=0)


class PropagateSerializer(serializers.Serializer):
    direction = serializers.ChoiceField(choices=["forward", "backward", "both"], default="forward")
    start_frame = serializers.IntegerField(required=False, min_value=0)
    max_frames = serializers.IntegerField(required=False, min_value=0, allow_null=True, help_text="Frames after the start frame.")
    resume = serializers.BooleanField(default=False, help_text="Continue an interrupted or cancelled propagation.")


class FrameObjectSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    score = serializers.FloatField()
    box = serializers.ListField(child=serializers.FloatField())
    mask = serializers.JSONField(help_text="COCO RLE {size, counts}.")
    label = serializers.CharField(required=False, help_text="The text prompt that found the object.")


class FrameResultSerializer(serializers.Serializer):
    frame = serializers.IntegerField()
    objects = FrameObjectSerializer(many=True)
    object_id = serializers.IntegerField(required=False, help_text="Points prompts: the object added or refined.")


