from __future__ import annotations

from rest_framework import serializers


class SetupSerializer(serializers.Serializer):
    """Label Studio's /setup body (the fields read here; it sends more)."""

    schema = serializers.CharField(required=False, allow_blank=True, help_text="The project's labeling config (XML).")
    project = serializers.CharField(required=False, allow_blank=True, help_text='"<id>.<created timestamp>".')


class PredictParamsSerializer(serializers.Serializer):
    # A field named like Field.context: DRF's metaclass moves declared fields off the class, the stubs do not know.
    context = serializers.JSONField(  # type: ignore[assignment]
        required=False, allow_null=True, help_text="The smart tools' regions; null for a batch.",
    )


class PredictSerializer(serializers.Serializer):
    """Label Studio's /predict body."""

    tasks = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=100)
    label_config = serializers.CharField(help_text="The project's labeling config (XML).")
    project = serializers.CharField(required=False, allow_blank=True)
    params = PredictParamsSerializer(required=False)


class PredictResponseSerializer(serializers.Serializer):
    results = serializers.ListField(
        child=serializers.DictField(), help_text="One prediction per task: {result: [regions], score, model_version, info}."
    )
