"""Video sessions: Postgres is the truth about them (who, which video, which worker, every prompt
applied, how far propagation got, where the results are), so a session survives its worker."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class VideoSession(models.Model):
    class Status(models.TextChoices):
        STARTING = "starting"
        READY = "ready"
        PROPAGATING = "propagating"
        RECOVERING = "recovering"
        CLOSED = "closed"
        EXPIRED = "expired"
        FAILED = "failed"

    class Kind(models.TextChoices):
        VIDEO = "video", "an uploaded video"
        LIVE = "live", "frames pushed by the client over the websocket"

    OPEN_STATUSES = (Status.STARTING, Status.READY, Status.PROPAGATING, Status.RECOVERING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="video_sessions")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.VIDEO)
    video = models.ForeignKey("uploads.Upload", on_delete=models.PROTECT, related_name="video_sessions", null=True, blank=True)
    live = models.JSONField(
        default=dict, blank=True,
        help_text="Live sessions: store (bool), mask_format, source_url (a stream URL session; shown redacted).",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTING, db_index=True)
    worker = models.CharField(max_length=200, blank=True, help_text="The model worker holding the session's state.")
    worker_queue = models.CharField(max_length=200, blank=True)
    owner_epoch = models.PositiveIntegerField(
        default=1,
        help_text="Ownership epoch (fencing token): raised by every claim of the session by another worker; "
        "a worker's writes and events for the session count only while it is the current one.",
    )
    frame_count = models.PositiveIntegerField()
    fps = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    propagation = models.JSONField(
        default=dict, blank=True,
        help_text="direction, start_frame, max_frames, state (running/done/cancelled/interrupted/failed), "
        "frames_done, last_frame, total, started_at, finished_at",
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_activity_at = models.DateTimeField(auto_now_add=True, db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    files_removed = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "worker"])]

    def __str__(self) -> str:
        return f"session {self.id} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class SessionPrompt(models.Model):
    """The prompt log: every prompt and object edit applied, in order; replayed to rebuild a session."""

    class Kind(models.TextChoices):
        TEXT = "text"
        EXEMPLAR = "exemplar"
        POINTS = "points"
        REMOVE_OBJECT = "remove_object"
        RESET = "reset"

    session = models.ForeignKey(VideoSession, on_delete=models.CASCADE, related_name="prompts")
    sequence = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    frame_index = models.PositiveIntegerField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "sequence"]
        constraints = [models.UniqueConstraint(fields=["session", "sequence"], name="one_prompt_per_sequence")]


class FrameResult(models.Model):
    """Index of stored per-frame results (the masks themselves are JSON files under OUTPUT_DIR)."""

    session = models.ForeignKey(VideoSession, on_delete=models.CASCADE, related_name="frame_results")
    frame_index = models.PositiveIntegerField()
    object_count = models.PositiveIntegerField()
    path = models.CharField(max_length=500, help_text="Relative to OUTPUT_DIR.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["session", "frame_index"]
        constraints = [models.UniqueConstraint(fields=["session", "frame_index"], name="one_result_per_frame")]
