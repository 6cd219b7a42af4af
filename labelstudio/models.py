from __future__ import annotations

from django.conf import settings
from django.db import models


class FetchedMedia(models.Model):
    """A task's media fetched from Label Studio, kept as an Upload of the key's owner: later clicks
    on the task reuse it (no refetch), and the image's sha256 keys the model's feature cache."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    source_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the media URL as fetched.")
    source = models.TextField(help_text="The URL, without credentials.")
    upload = models.ForeignKey("uploads.Upload", on_delete=models.CASCADE, related_name="+")
    fetched_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "source_sha256"], name="fetched_media_once_per_owner")]

    def __str__(self) -> str:
        return self.source
