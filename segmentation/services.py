"""Image segmentation requests: resolve the image, check prompts against it, run the job."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.files.move import file_move_safe
from django.core.files.uploadedfile import TemporaryUploadedFile

from inference.jobs import ConceptPrompt, ImageJob, InteractivePrompt, Prompt
from sam3site.errors import InvalidInput, NotFound, UnsupportedMedia
from segmentation.prompt_geometry import check_prompts_inside
from uploads.models import Upload
from uploads.probing import probe_image

INLINE_DIR_NAME = ".inline"  # inline images live here only while their request runs


@dataclass(frozen=True)
class ResolvedImage:
    path: Path
    sha256: str
    width: int
    height: int


def image_from_upload(*, owner: User | AnonymousUser, upload_id: uuid.UUID) -> ResolvedImage:
    upload = None if isinstance(owner, AnonymousUser) else Upload.objects.filter(pk=upload_id, owner=owner).first()
    if upload is None:
        raise NotFound(f"Upload {upload_id} not found.", code="upload_not_found")
    if upload.kind != Upload.Kind.IMAGE:
        raise InvalidInput(f"Upload {upload_id} is a {upload.kind}, not an image.", code="not_an_image")
    return ResolvedImage(upload.path, upload.sha256, upload.width, upload.height)


def inline_image_store(uploaded_file: TemporaryUploadedFile) -> ResolvedImage:
    """Probe the posted image and keep it under UPLOAD_DIR (shared with the workers) for the
    request's duration; :func:`inline_image_discard` removes it.

    Only the header is read here (format, size, decompression-bomb bound): the model worker decodes
    the image anyway and answers a truncated or broken one with the same 400 ``corrupt_file``."""
    temporary_path = Path(uploaded_file.temporary_file_path())
    try:
        if temporary_path.stat().st_size == 0:
            raise InvalidInput("The image file is empty.", code="empty_file")
        info = probe_image(temporary_path, settings.MAX_IMAGE_PIXELS, decode=False)
        if info is None:
            raise UnsupportedMedia("`file` is not a supported image (JPEG, PNG, WebP, BMP, TIFF).")
        final_path = Path(settings.UPLOAD_DIR) / INLINE_DIR_NAME / f"{uuid.uuid4().hex}.{info.extension}"
        final_path.parent.mkdir(parents=True, exist_ok=True)
        file_move_safe(str(temporary_path), str(final_path))
        return ResolvedImage(final_path, uploaded_file.sha256, info.width, info.height)  # type: ignore[attr-defined]
    finally:
        uploaded_file.close()  # removes the temporary file when it was not moved


def inline_image_discard(image: ResolvedImage) -> None:
    image.path.unlink(missing_ok=True)


def prompts_within_image(prompts: list[dict[str, Any]], image: ResolvedImage) -> list[Prompt]:
    """Typed prompts, refusing coordinates outside the image (a common client bug worth a clear error)."""
    check_prompts_inside(prompts, image.width, image.height)
    typed: list[Prompt] = []
    for prompt in prompts:
        if "points" in prompt or "box" in prompt:
            typed.append(
                InteractivePrompt(
                    points=prompt.get("points", []), point_labels=prompt.get("point_labels", []),
                    box=prompt.get("box"), multimask=prompt.get("multimask", False),
                )
            )
        else:
            typed.append(ConceptPrompt(text=prompt.get("text"), boxes=prompt.get("boxes", []), box_labels=prompt.get("box_labels", [])))
    return typed


def image_job_build(*, request_id: str, image: ResolvedImage, data: dict[str, Any]) -> ImageJob:
    now = time.time()
    return ImageJob(
        request_id=request_id,
        image_path=str(image.path),
        image_sha256=image.sha256,
        prompts=prompts_within_image(data["prompts"], image),
        threshold=data["threshold"],
        mask_threshold=data["mask_threshold"],
        mask_format=data["mask_format"],
        max_instances=data.get("max_instances"),
        enqueued_at=now,
        deadline=now + settings.CONFIG.inference_timeout_seconds,
    )
