"""What can be sent as an image or a video: a path, bytes, a PIL image or a numpy array, or
something already uploaded (an :class:`~sam3_client.Upload` or its id)."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from sam3_client._core import FilePart
from sam3_client.models import Upload

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    ImageSource: TypeAlias = str | os.PathLike[str] | bytes | PILImage | np.ndarray[Any, Any] | Upload | uuid.UUID
else:
    ImageSource: TypeAlias = Any
VideoSource: TypeAlias = "str | os.PathLike[str] | bytes | Upload | uuid.UUID"

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UploadRef:
    """Something already on the server."""

    id: str


def resolve(source: Any, *, name: str | None = None) -> UploadRef | FilePart | Any:
    """An :class:`UploadRef`, a :class:`FilePart` to send, or (PIL images, arrays) the object to encode.

    A string is a path when such a file exists, else an upload id; anything else that is neither
    raises FileNotFoundError.
    """
    if isinstance(source, Upload):
        return UploadRef(source.id)
    if isinstance(source, uuid.UUID):
        return UploadRef(str(source))
    if isinstance(source, bytes | bytearray | memoryview):
        return FilePart(name or "upload", bytes(source))
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_file():
            return FilePart(name or path.name, path)
        if isinstance(source, str) and _is_uuid(source):
            return UploadRef(source)
        raise FileNotFoundError(f"No such file: {source}")
    if isinstance(source, np.ndarray) or _is_pil_image(source):
        return source
    raise TypeError(f"Cannot send a {type(source).__name__}: give a path, bytes, a PIL image, a numpy array or an upload")


def encode_png(image: Any, name: str | None = None) -> FilePart:
    """A PIL image or an ``(h, w)``, ``(h, w, 3)`` (RGB) or ``(h, w, 4)`` uint8 array, as PNG."""
    try:
        from PIL import Image
    except ImportError as missing:
        raise ImportError("Sending arrays and PIL images needs Pillow: pip install 'sam3-client[images]'") from missing
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"Arrays must be uint8 (h, w), (h, w, 3) RGB or (h, w, 4) RGBA; got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return FilePart(name or "image.png", buffer.getvalue(), "image/png")


def sha256_of(part: FilePart) -> str:
    digest = hashlib.sha256()
    if isinstance(part.content, bytes):
        digest.update(part.content)
    else:
        with part.content.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _is_pil_image(value: object) -> bool:
    return any(cls.__module__.startswith("PIL.") and cls.__name__ == "Image" for cls in type(value).__mro__)
