from __future__ import annotations

from typing import Any

from rest_framework import serializers

from inference.jobs import MASK_FORMATS
from inference.stream_urls import MAX_URL_LENGTH, redact
from sam3site.schema import paginated
from segmentation.serializers import PromptSerializer
from sessions.models import SessionPrompt, VideoSession


class SessionPromptSerializer(serializers.ModelSerializer):
    class Meta:
        model = SessionPrompt
        fields = ("sequence", "kind", "frame_index", "payload", "created_at")


class VideoSessionSerializer(serializers.ModelSerializer):
    video = serializers.UUIDField(source="video_id", read_only=True, allow_null=True, help_text="null for a live session.")
    frames_stored = serializers.IntegerField(read_only=True, source="frame_results.count")

    class Meta:
        model = VideoSession
        fields: tuple[str, ...] = (
            "id", "kind", "video", "live", "status", "worker", "frame_count", "fps", "width", "height", "propagation", "error",
            "created_at", "last_activity_at", "closed_at", "frames_stored",
        )
        read_only_fields: tuple[str, ...] = fields

    def to_representation(self, instance: VideoSession) -> dict[str, Any]:
        data = super().to_representation(instance)
        if isinstance(data.get("live"), dict) and data["live"].get("source_url"):  # stored whole, shown without credentials
            data["live"] = {**data["live"], "source_url": redact(data["live"]["source_url"])}
        return data


class VideoSessionDetailSerializer(VideoSessionSerializer):
    prompts = SessionPromptSerializer(many=True, read_only=True)

    class Meta(VideoSessionSerializer.Meta):
        fields = (*VideoSessionSerializer.Meta.fields, "prompts")
        read_only_fields = fields


class SessionCreateSerializer(serializers.Serializer):
    video = serializers.UUIDField(required=False, help_text="Id of one of your uploaded videos.")
    live = serializers.BooleanField(
        default=False, help_text="A live session instead: you push the frames over the websocket /ws/sessions/<id>/live/.",
    )
    store = serializers.BooleanField(
        default=False, help_text="Live: keep every computed frame's result, for GET /api/v1/sessions/<id>/frames/ afterwards.",
    )
    mask_format = serializers.ChoiceField(choices=MASK_FORMATS, default="rle", help_text="Live: the masks' format in frame events.")
    source_url = serializers.CharField(
        required=False, max_length=MAX_URL_LENGTH, trim_whitespace=True,
        help_text="Live: read the frames from this stream (rtsp://, rtmp://, http(s):// MP4, HLS or MJPEG) on the server "
        "instead of pushing them. Public addresses only, unless listed in STREAM_URL_ALLOWLIST; credentials are never shown.",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if "source_url" in data and not data["live"]:
            raise serializers.ValidationError({"source_url": "A stream URL makes a live session: give live: true."})
        if data["live"] == ("video" in data):
            raise serializers.ValidationError({"video": "Give a video, or live: true for a live session (not both)."})
        return data


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
    # A field named like Field.label: DRF's metaclass moves declared fields off the class, the stubs do not know.
    label = serializers.CharField(required=False, help_text="The text prompt that found the object.")  # type: ignore[assignment]


class FrameResultSerializer(serializers.Serializer):
    frame = serializers.IntegerField()
    objects = FrameObjectSerializer(many=True)
    object_id = serializers.IntegerField(required=False, help_text="Points prompts: the object added or refined.")


class SessionPromptResultSerializer(serializers.Serializer):
    """What a prompt answers: the prompted frame's objects; a live session's text prompt, which applies
    from the next pushed frame, answers the text prompts tracked instead of a frame."""

    frame = serializers.IntegerField(required=False, help_text="The frame prompted (absent for a live session's text prompt).")
    objects = FrameObjectSerializer(many=True)
    object_id = serializers.IntegerField(required=False, help_text="Points prompts: the object added or refined.")
    texts = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Live sessions' text prompts: every text prompt now tracked."
    )
    worker = serializers.CharField(required=False, help_text="The model worker that applied the prompt.")


# --- response bodies of the session commands (sessions.commands, sessions.worker), for the schema ---

class PropagationLegSerializer(serializers.Serializer):
    reverse = serializers.BooleanField(help_text="Backward (towards frame 0).")
    first = serializers.IntegerField(help_text="The first frame the leg delivers.")
    max_frames = serializers.IntegerField(allow_null=True, help_text="Frames after the first one; null: to the end.")


class PropagationSerializer(serializers.Serializer):
    """The propagation record: ``VideoSession.propagation`` as sessions.commands.session_propagate starts it."""

    direction = serializers.ChoiceField(choices=["forward", "backward", "both"])
    start_frame = serializers.IntegerField()
    max_frames = serializers.IntegerField(allow_null=True)
    state = serializers.ChoiceField(
        choices=["running", "done", "cancelled", "interrupted", "failed"], help_text="`running` when just started."
    )
    frames_done = serializers.IntegerField()
    last_frame = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(required=False, help_text="Why a `failed` propagation failed.")
    legs = PropagationLegSerializer(many=True, required=False, help_text="The passes over the video, in order.")
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    resumed = serializers.BooleanField()


class PropagationStartedSerializer(serializers.Serializer):
    propagation = PropagationSerializer()


class WorkerResultSerializer(serializers.Serializer):
    worker = serializers.CharField(required=False, help_text="The model worker that ran the command (not in the embedded mode).")


class CancelResultSerializer(WorkerResultSerializer):
    cancelling = serializers.BooleanField(help_text="False when the worker had already finished the propagation.")


class ObjectsResultSerializer(WorkerResultSerializer):
    objects = serializers.ListField(child=serializers.IntegerField(), help_text="Ids of the objects still tracked.")


class RemovedObjectSerializer(ObjectsResultSerializer):
    removed = serializers.IntegerField(help_text="The object no longer tracked.")


class TicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="Single use: connect to /ws/sessions/<id>/?ticket=<ticket>.")
    expires_in = serializers.IntegerField(help_text="Seconds the ticket stays valid.")


PaginatedVideoSessionListSerializer = paginated(VideoSessionSerializer)
PaginatedFrameResultListSerializer = paginated(FrameResultSerializer)
