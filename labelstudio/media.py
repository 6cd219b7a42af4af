"""A task's image or video, fetched from Label Studio (or a public URL) and kept as an Upload.

Relative task URLs (``/data/upload/3/ab12-photo.jpg``, ``/tasks/7/presign/?fileuri=...``) are
Label Studio's own: fetched from LABEL_STUDIO_URL with LABEL_STUDIO_API_KEY, whose origin (scheme,
host, port) is trusted by name. Absolute URLs pass the stream URLs' SSRF guard (inference.stream_urls: public addresses
only unless STREAM_URL_ALLOWLIST names them, every redirect checked); the token goes only to
Label Studio's own origin. A file is checked as an upload is (uploads.probing) and kept as an
Upload of the key's owner; a FetchedMedia row maps its URL to it, so a later click on the same
task neither refetches it nor recomputes the image's features (keyed by its sha256).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User

from accounts.services import quota_for
from inference.stream_urls import MAX_URL_LENGTH, open_checked, redact
from labelstudio.models import FetchedMedia
from sam3site.errors import ApiError, InvalidInput, NotFound, PayloadTooLarge
from uploads.handlers import limit_message
from uploads.models import Upload
from uploads.services import upload_create_from_file

CHUNK_BYTES = 1024 * 1024
ACCESS_TOKEN_SECONDS = 240  # Label Studio's access tokens live 5 minutes: refreshed before that


class LabelStudioUnavailable(ApiError):
    """Label Studio could not be asked, or refused us: a problem between the two servers (502)."""

    status_code, code, message = 502, "label_studio_unavailable", "Label Studio could not be reached."


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


class _PersonalAccessToken:
    """A personal access token (a JWT refresh token) exchanged for short-lived access tokens, kept
    in this process only (never in Redis or a log)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._access: tuple[str, str, float] | None = None  # refresh token, access token, expiry

    def access(self, base_url: str, refresh: str) -> str:
        with self._lock:
            if self._access and self._access[0] == refresh and self._access[2] > time.monotonic():
                return self._access[1]
            _, connection, response = open_checked(
                urljoin(base_url, "/api/token/refresh/"), [urlsplit(base_url).hostname or ""], method="POST",
                body=json.dumps({"refresh": refresh}).encode(), headers_for=lambda url: {"Content-Type": "application/json"},
                timeout=settings.CONFIG.label_studio_fetch_timeout_seconds, what="Label Studio", code="label_studio_unavailable",
            )
            try:
                body = response.read(65536)
            finally:
                connection.close()
            try:
                access = json.loads(body)["access"] if response.status == 200 else None
            except (ValueError, KeyError, TypeError):
                access = None
            if not isinstance(access, str):
                raise LabelStudioUnavailable(
                    f"Label Studio refused to refresh LABEL_STUDIO_API_KEY (HTTP {response.status}); "
                    "give a current personal access token or a legacy token.",
                    code="label_studio_refused",
                )
            self._access = (refresh, access, time.monotonic() + ACCESS_TOKEN_SECONDS)
            return access


_personal_token = _PersonalAccessToken()


def _label_studio_headers(base_url: str) -> dict[str, str]:
    key = settings.CONFIG.label_studio_api_key
    if not key:
        return {}
    if key.count(".") == 2:  # a JWT: a personal access token
        return {"Authorization": f"Bearer {_personal_token.access(base_url, key)}"}
    return {"Authorization": f"Token {key}"}


def absolute_media_url(url: object) -> str:
    """The URL to fetch a task's media from; InvalidInput when there is none to fetch."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("The task has no media URL under the key the labeling config names.", code="task_media_missing")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"The task's media URL is longer than {MAX_URL_LENGTH} characters.", code="task_media_url_invalid")
    base = settings.CONFIG.label_studio_url
    if url.startswith("/") and not url.startswith("//"):
        if not base:
            raise InvalidInput(
                f"The task's media {url} is a path on Label Studio: set LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY) "
                "on the SAM3 server so that it can fetch it.",
                code="label_studio_url_not_set",
            )
        return urljoin(base, url)
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise InvalidInput(
            f"The task's media URL {redact(url)} is not http(s); Label Studio serves cloud storage through its own URLs "
            "(/tasks/<id>/presign/...), which the server fetches from LABEL_STUDIO_URL.",
            code="task_media_url_invalid",
        )
    return url


def _download(source: str, limit: int) -> tuple[Path, str]:
    """``source`` written under UPLOAD_DIR/.incoming (at most ``limit`` bytes), with its sha256."""
    base = settings.CONFIG.label_studio_url
    label_studio = _origin(base) if base else None

    def from_label_studio(url: str) -> bool:  # its origin, not its host's other ports
        return label_studio is not None and _origin(url) == label_studio

    def allowlist(url: str) -> list[str]:
        return [*settings.CONFIG.stream_url_allowlist, *([urlsplit(url).hostname or ""] if from_label_studio(url) else [])]

    def headers_for(url: str) -> dict[str, str]:  # the token only for Label Studio's own origin
        return _label_studio_headers(base) if base and from_label_studio(url) else {}

    url, connection, response = open_checked(
        source, allowlist, headers_for=headers_for, timeout=settings.CONFIG.label_studio_fetch_timeout_seconds,
        what="task's media URL", code="label_studio_unavailable" if from_label_studio(source) else "task_media_unreachable",
    )
    path = Path(settings.FILE_UPLOAD_TEMP_DIR) / f"label-studio-{uuid.uuid4().hex}"
    try:
        if response.status == 404:
            raise NotFound(f"The task's media {redact(url)} was not found (HTTP 404).", code="task_media_not_found")
        if response.status in (401, 403) and from_label_studio(url):
            raise LabelStudioUnavailable(
                f"Label Studio refused to serve {redact(url)} (HTTP {response.status}): check LABEL_STUDIO_API_KEY.",
                code="label_studio_refused",
            )
        if response.status >= 500 and from_label_studio(url):  # e.g. 1.23 answers 500 for an upload whose file is gone
            raise LabelStudioUnavailable(f"Label Studio failed to serve {redact(url)} (HTTP {response.status}).", code="label_studio_error")
        if response.status >= 400:
            raise InvalidInput(f"The task's media {redact(url)} answered HTTP {response.status}.", code="task_media_unreachable")
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(limit_message(limit), detail={"limit_bytes": limit})
        path.parent.mkdir(parents=True, exist_ok=True)
        digest, received = hashlib.sha256(), 0
        with path.open("wb") as file:
            while chunk := response.read(CHUNK_BYTES):
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLarge(limit_message(limit), detail={"limit_bytes": limit})
                digest.update(chunk)
                file.write(chunk)
        if received == 0:
            raise InvalidInput(f"The task's media {redact(url)} is empty.", code="empty_file")
        return path, digest.hexdigest()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        connection.close()


def _cached(owner: User, digest: str) -> Upload | None:
    fetched = FetchedMedia.objects.select_related("upload").filter(owner=owner, source_sha256=digest).first()
    return fetched.upload if fetched is not None and fetched.upload.path.exists() else None


def _keep(owner: User, source: str, digest: str, path: Path, sha256: str) -> Upload:
    upload = Upload.objects.filter(owner=owner, sha256=sha256).first()
    if upload is not None and upload.path.exists():  # the same bytes under another URL: one Upload
        path.unlink(missing_ok=True)
    else:
        try:
            name = Path(urlsplit(source).path).name
            upload = upload_create_from_file(owner=owner, temporary_path=path, sha256=sha256, original_name=name)
        finally:
            path.unlink(missing_ok=True)  # moved when it was kept
    FetchedMedia.objects.update_or_create(owner=owner, source_sha256=digest, defaults={"source": redact(source), "upload": upload})
    return upload


async def task_media(*, owner: User, url: object) -> tuple[Upload, bool]:
    """The Upload holding the task's media, and whether it was already here (no fetch)."""
    source = absolute_media_url(url)
    digest = hashlib.sha256(source.encode()).hexdigest()
    upload = await sync_to_async(_cached)(owner, digest)
    if upload is not None:
        return upload, True
    limit = (await sync_to_async(quota_for)(owner)).max_upload_bytes
    path, sha256 = await asyncio.to_thread(_download, source, limit)
    return await sync_to_async(_keep)(owner, source, digest, path, sha256), False
