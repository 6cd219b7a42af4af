from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.move import file_move_safe
from django.core.files.uploadedfile import TemporaryUploadedFile

from sam3site.errors import Conflict
from uploads.models import Upload
from uploads.probing import probe_media


def upload_create(*, owner: User, uploaded_file: TemporaryUploadedFile) -> Upload:
    """Probe a streamed upload (BoundedUploadHandler's file) and keep it under a server-generated name;
    on any failure nothing stays on disk."""
    try:
        return upload_create_from_file(
            owner=owner, temporary_path=Path(uploaded_file.temporary_file_path()),
            sha256=uploaded_file.sha256,  # type: ignore[attr-defined]  # set by BoundedUploadHandler
            original_name=uploaded_file.name or "",
        )
    finally:
        uploaded_file.close()  # removes the temporary file when it was not moved


def upload_create_from_file(*, owner: User, temporary_path: Path, sha256: str, original_name: str) -> Upload:
    """An Upload of a file written under UPLOAD_DIR (moved, not copied), after the same probe as an
    upload's; the caller removes ``temporary_path`` when this raises."""
    size_bytes = temporary_path.stat().st_size
    info = probe_media(temporary_path, settings.MAX_IMAGE_PIXELS)
    upload_id = uuid.uuid4()
    stored_name = f"{owner.pk}/{upload_id.hex}.{info.extension}"
    final_path = Path(settings.UPLOAD_DIR) / stored_name
    final_path.parent.mkdir(parents=True, exist_ok=True)
    file_move_safe(str(temporary_path), str(final_path))
    try:
        return Upload.objects.create(
            id=upload_id,
            owner=owner,
            kind=info.kind,
            original_name=original_name[:255],
            stored_name=stored_name,
            media_type=info.media_type,
            sha256=sha256,
            size_bytes=size_bytes,
            width=info.width,
            height=info.height,
            frame_count=info.frame_count,
            fps=info.fps,
            duration_seconds=info.duration_seconds,
        )
    except BaseException:
        final_path.unlink(missing_ok=True)
        raise


def upload_delete(*, upload: Upload) -> None:
    from sessions.models import VideoSession

    sessions = VideoSession.objects.filter(video=upload)
    if sessions.filter(status__in=VideoSession.OPEN_STATUSES).exists():
        raise Conflict("The video has open sessions; close them first.", code="video_in_use")
    sessions.delete()  # ended sessions of this video (their result files are swept)
    path = upload.path
    upload.delete()
    path.unlink(missing_ok=True)
