"""Upload handler that streams to disk, hashing and bounding the size chunk by chunk."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from sam3site.errors import PayloadTooLarge


def limit_message(limit_bytes: int) -> str:
    return f"The file exceeds the upload limit of {limit_bytes / (1024 * 1024):g} MiB."


class BoundedUploadHandler(TemporaryFileUploadHandler):
    """Writes each file to a temporary file under UPLOAD_DIR/.incoming.

    The bound is ``request.upload_limit_bytes`` (the caller's quota, set by the view) or
    MAX_UPLOAD_SIZE_MB; crossing it aborts the parse at once and deletes what was written.
    """

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        self.received = 0
        self.digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        limit = getattr(self.request, "upload_limit_bytes", settings.MAX_UPLOAD_BYTES)
        if self.received > limit:
            self.file.close()  # a NamedTemporaryFile: closing removes it from disk
            raise PayloadTooLarge(limit_message(limit), detail={"limit_bytes": limit})
        self.digest.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int) -> UploadedFile | None:
        uploaded = super().file_complete(file_size)  # always ``self.file`` for this handler
        if uploaded is not None:
            uploaded.sha256 = self.digest.hexdigest()  # type: ignore[attr-defined]  # read by the upload services
        return uploaded
