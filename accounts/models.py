"""API users' keys, quotas and usage.

Keys follow djangorestframework-api-key: ``<prefix>.<secret>``; only the prefix (public, for lookup
and logs) and a SHA-256 of the whole key are stored. A slow password hash buys nothing for
256-bit random secrets and would cost every request.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, help_text="What the key is for, e.g. 'labeling pipeline'.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked = models.BooleanField(default=False, help_text="A revoked key is refused for good.")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return not self.revoked and not self.is_expired


class Quota(models.Model):
    """Per-user limits; an empty field falls back to the server-wide default."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: RATE_LIMIT_REQUESTS_PER_MINUTE."
    )
    daily_requests = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    max_concurrent_sessions = models.PositiveIntegerField(
        null=True, blank=True, help_text="Open video sessions at once. Empty: MAX_CONCURRENT_SESSIONS."
    )
    max_upload_mb = models.PositiveIntegerField(
        null=True, blank=True, help_text="Largest upload in MiB. Empty: MAX_UPLOAD_SIZE_MB (never above it)."
    )

    def __str__(self) -> str:
        return f"quota of {self.user}"


class DailyUsage(models.Model):
    """Requests counted per user, key and UTC day (key empty: an env key or anonymous)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="daily_usage")
    day = models.DateField()
    requests = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "daily usage"
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(fields=["user", "api_key", "day"], name="one_usage_row_per_key_and_day"),
            models.UniqueConstraint(
                fields=["user", "day"], condition=models.Q(api_key=None), name="one_keyless_usage_row_per_day"
            ),
        ]
