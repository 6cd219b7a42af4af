from __future__ import annotations

import re

from django.contrib.auth.models import User
from django.db.models import QuerySet

from sam3site.errors import InvalidInput
from uploads.models import Upload

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def uploads_of(*, owner: User, sha256: str | None = None) -> QuerySet[Upload]:
    """The owner's uploads; with ``sha256`` (hex, any case) only those with that content, so a client
    can skip sending a file the server already has."""
    uploads = Upload.objects.filter(owner=owner)
    if sha256 is not None:
        digest = sha256.lower()
        if not SHA256_HEX.fullmatch(digest):
            raise InvalidInput(
                f"`sha256` must be 64 hexadecimal digits, got {sha256[:80]!r}.", code="invalid_sha256", detail={"sha256": sha256[:80]}
            )
        uploads = uploads.filter(sha256=digest)
    return uploads
