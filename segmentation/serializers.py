from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.utils import html

from inference.jobs import MASK_FORMATS, TEXT_PROMPT_MAX_TOKENS, text_prompt_too_long_message, words_in_tokens
from sam3site.errors import InvalidInput
from sam3site.parsers import loads_checked

MAX_PROMPTS = 16
MAX_BOXES = 32
MAX_POINTS = 64


def _finite(value: float) -> None:
    if not math.isfinite(value):
        raise serializers.ValidationError("must be a finite number")


class PromptSerializer(serializers.Serializer):
    """A concept (``text`` and/or exemplar ``boxes``: every matching instance) or an interactive
    prompt (``points`` and/or one ``box``: one object, SAM-style). Coordinates are pixels of the
    original image; labels are 1 (positive / on the object) or 0 (negative / background)."""

    text = serializers.CharField(
        required=False, max_length=200,
        help_text=(
            "A noun phrase, e.g. 'yellow school bus'. The text encoder reads at most"
            f" {TEXT_PROMPT_MAX_TOKENS} CLIP tokens, start and end markers included"
            f" (about {words_in_tokens(TEXT_PROMPT_MAX_TOKENS)} words); a longer text is refused with `prompt_too_long`,"
            " never cut. At most 200 characters."
        ),
    )
    boxes = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(validators=[_finite]), min_length=4, max_length=4),
        required=False, max_length=MAX_BOXES, help_text="Exemplar boxes [x1, y1, x2, y2] of the concept.",
    )
    box_labels = serializers.ListField(child=serializers.ChoiceField(choices=[0, 1]), required=False, max_length=MAX_BOXES)
    points = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(validators=[_finite]), min_length=2, max_length=2),
        required=False, max_length=MAX_POINTS, help_text="Clicks [x, y] on one object.",
    )
    point_labels = serializers.ListField(child=serializers.ChoiceField(choices=[0, 1]), required=False, max_length=MAX_POINTS)
    box = serializers.ListField(
        child=serializers.FloatField(validators=[_finite]), min_length=4, max_length=4, required=False,
        help_text="One box [x1, y1, x2, y2] around one object (interactive).",
    )
    multimask = serializers.BooleanField(required=False, default=False, help_text="Interactive: return 3 candidate masks.")

    def validate_text(self, text: str) -> str:
        # Exact token counts need the model's vocabulary, which only the workers load (they refuse
        # with the exact count). Every word is at least one token, so too many words is refused here.
        at_least = len(text.split()) + 2
        if at_least > TEXT_PROMPT_MAX_TOKENS:
            raise InvalidInput(text_prompt_too_long_message(at_least, at_least=True), code="prompt_too_long")
        return text

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        concept = "text" in data or "boxes" in data
        interactive = "points" in data or "box" in data
        if concept == interactive:
            raise serializers.ValidationError(
                "A prompt is either a concept (text and/or boxes) or interactive (points and/or box), not both or neither."
            )
        for items, labels in (("boxes", "box_labels"), ("points", "point_labels")):
            if labels in data and len(data[labels]) != len(data.get(items, [])):
                raise serializers.ValidationError({labels: f"needs one label per entry of {items}"})
        for box in [*data.get("boxes", []), *([data["box"]] if "box" in data else [])]:
            if not (box[0] < box[2] and box[1] < box[3]):
                raise serializers.ValidationError(f"box {box} must satisfy x1 < x2 and y1 < y2")
        if concept and "text" in data and not data["text"].strip():
            raise serializers.ValidationError({"text": "must not be blank"})
        return data


class PromptListField(serializers.ListField):
    """A JSON list; in multipart forms, one field holding the JSON text."""

    child = PromptSerializer()

    def get_value(self, dictionary: Any) -> Any:
        if html.is_html_input(dictionary):
            raw = dictionary.get(self.field_name, empty)
            if raw is empty:
                return empty
            try:
                return loads_checked(raw, where=f"`{self.field_name}`")
            except ValueError:
                return raw  # rejected by to_internal_value with a clear message
        return super().get_value(dictionary)


class SegmentRequestSerializer(serializers.Serializer):
    image = serializers.UUIDField(required=False, help_text="Id of an uploaded image of yours.")
    file = serializers.FileField(  # not ImageField: our own probe decodes it, under the pixel bound
        required=False, help_text="The image itself (multipart), instead of `image`.", allow_empty_file=True
    )
    prompts: serializers.Field = PromptListField(  # a Field: SegmentFormSerializer redeclares it as JSON text
        min_length=1, max_length=MAX_PROMPTS, help_text="One result list per prompt, in order."
    )
    threshold = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="Minimum score (default IMAGE_MODEL_CONFIDENCE_THRESHOLD)."
    )
    mask_threshold = serializers.FloatField(required=False, default=0.5, min_value=0.0, max_value=1.0)
    mask_format = serializers.ChoiceField(
        choices=MASK_FORMATS, default="rle",
        help_text=(
            "rle: COCO RLE with string counts (pycocotools); polygons: one entry per connected component, "
            "[exterior ring, hole ring, ...], each ring a flat [x, y, x, y, ...] list of pixel-corner coordinates "
            "along the pixel edges (fill the rings even-odd to get the mask back exactly); png: base64 PNG; none."
        ),
    )
    max_instances = serializers.IntegerField(required=False, min_value=1, max_value=1000)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("image" in data) == ("file" in data):
            raise serializers.ValidationError("Give exactly one of `image` (an upload id) or `file` (the image).")
        data.setdefault("threshold", settings.CONFIG.image_model_confidence_threshold)
        return data


class InstanceSerializer(serializers.Serializer):
    score = serializers.FloatField()
    box = serializers.ListField(child=serializers.FloatField(), help_text="[x1, y1, x2, y2] in original image pixels.")
    mask = serializers.JSONField(
        help_text=(
            "Per mask_format: {size, counts} (rle), [[[x, y, ...], ...], ...] (polygons: components, each a list of"
            " rings), base64 (png)."
        )
    )


class PromptResultSerializer(serializers.Serializer):
    prompt = serializers.DictField()
    instances = InstanceSerializer(many=True)
    object_score = serializers.FloatField(required=False, help_text="Interactive: probability the object is present.")


class SegmentResponseSerializer(serializers.Serializer):
    image = serializers.DictField(help_text="sha256, width, height.")
    results = PromptResultSerializer(many=True)
    model = serializers.DictField(help_text="Model identity; `warning` when the tiny random model answers.")
    cache_hit = serializers.BooleanField(help_text="The image's features came from the worker's cache.")
    worker = serializers.CharField(help_text="The model worker that computed the result.")
    timings_ms = serializers.DictField(help_text="queued, compute, postprocess, total.")


class SegmentFormSerializer(SegmentRequestSerializer):
    """The multipart/form-data form of a segment request (for the schema): form fields are flat, so
    ``prompts`` is one field holding the JSON list."""

    prompts = serializers.CharField(help_text='The prompt list as JSON text, e.g. `[{"text": "dog"}]`.')
