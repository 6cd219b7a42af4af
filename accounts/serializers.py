from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from accounts.models import ApiKey, DailyUsage, Quota


class QuotaSerializer(serializers.ModelSerializer):
    class Meta:
        model = Quota
        fields = ("requests_per_minute", "daily_requests", "max_concurrent_sessions", "max_upload_mb")


class EffectiveQuotaSerializer(serializers.Serializer):
    requests_per_minute = serializers.IntegerField()
    daily_requests = serializers.IntegerField(allow_null=True)
    max_concurrent_sessions = serializers.IntegerField()
    max_upload_bytes = serializers.IntegerField()


class UsageSerializer(serializers.ModelSerializer):
    api_key = serializers.CharField(
        source="api_key.prefix", default=None, read_only=True, allow_null=True,
        help_text="Prefix of the key; null for keys from API_KEYS and for the browsable API's login.",
    )

    class Meta:
        model = DailyUsage
        fields = ("day", "api_key", "requests")


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    api_key = serializers.CharField(allow_null=True, help_text="Public prefix of the key used for this call.")
    quota = EffectiveQuotaSerializer()
    requests_today = serializers.IntegerField()
    usage = UsageSerializer(many=True)


class ApiKeySerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(
        slug_field="username", queryset=get_user_model().objects.all(), required=False,
        help_text="Owner (staff only; others always create keys for themselves).",
    )

    class Meta:
        model = ApiKey
        fields: tuple[str, ...] = ("id", "user", "name", "prefix", "created_at", "expires_at", "revoked", "last_used_at")
        read_only_fields = ("prefix", "created_at", "last_used_at", "revoked")


class CreatedApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The full key. Shown only in this response.")

    class Meta(ApiKeySerializer.Meta):
        fields = (*ApiKeySerializer.Meta.fields, "key")


class UserSerializer(serializers.ModelSerializer):
    quota = QuotaSerializer(required=False)

    class Meta:
        model = get_user_model()
        fields = ("id", "username", "email", "is_active", "is_staff", "date_joined", "quota")
        read_only_fields = ("date_joined",)

    def create(self, validated_data: dict) -> object:
        quota = validated_data.pop("quota", None)
        user = get_user_model().objects.create(**validated_data)
        user.set_unusable_password()
        user.save(update_fields=["password"])
        Quota.objects.create(user=user, **(quota or {}))
        return user

    def update(self, instance: object, validated_data: dict) -> object:
        quota = validated_data.pop("quota", None)
        user = super().update(instance, validated_data)
        if quota is not None:
            user.quota, _ = Quota.objects.update_or_create(user=user, defaults=quota)
        return user
