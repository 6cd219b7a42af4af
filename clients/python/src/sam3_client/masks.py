"""Masks as the server sends them, decoded to numpy boolean arrays when first asked for."""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask

MaskFormat = Literal["rle", "polygons", "png", "none"]
BoolArray = npt.NDArray[np.bool_]


class Mask:
    """One instance's mask in the format it was asked for (``mask_format``).

    ``array`` (or ``to_numpy()``) decodes it to an ``(height, width)`` boolean array on first use
    and keeps it: COCO RLE with pycocotools, polygons by even-odd filling of their rings (the
    server's polygons fill back to exactly its RLE mask), PNG with Pillow.
    """

    __slots__ = ("__dict__", "format", "height", "raw", "width")

    def __init__(self, raw: Any, format: MaskFormat, height: int, width: int) -> None:
        self.raw = raw
        self.format = format
        self.height = height
        self.width = width

    @classmethod
    def from_rle(cls, rle: dict[str, Any]) -> Mask:
        height, width = rle["size"]
        return cls(rle, "rle", int(height), int(width))

    @cached_property
    def array(self) -> BoolArray:
        if self.format == "rle":
            return _decode_rle(self.raw)
        if self.format == "polygons":
            return _fill_polygons(self.raw, self.height, self.width)
        if self.format == "png":
            return _decode_png(self.raw)
        raise ValueError("The mask was not sent (mask_format='none').")

    def to_numpy(self) -> BoolArray:
        return self.array

    @property
    def rle(self) -> dict[str, Any]:
        """COCO RLE ``{"size": [h, w], "counts": str}`` (encoded from the array for other formats)."""
        if self.format == "rle":
            return dict(self.raw)
        encoded = coco_mask.encode(np.asfortranarray(self.array.astype(np.uint8)))
        return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}

    @property
    def area(self) -> int:
        if self.format == "rle":
            return int(coco_mask.area(_coco_rle(self.raw)))
        return int(self.array.sum())

    def __repr__(self) -> str:
        return f"Mask({self.format}, {self.height}x{self.width})"


def _coco_rle(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def _decode_rle(rle: dict[str, Any]) -> BoolArray:
    with _quiet_pycocotools():
        return np.asarray(coco_mask.decode(_coco_rle(rle)), dtype=bool)


@contextmanager
def _quiet_pycocotools() -> Iterator[None]:
    """pycocotools' decoder warns under numpy 2 about a keyword its own objects lack: nothing a caller can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy keyword", DeprecationWarning)
        yield


def _fill_polygons(components: list[list[list[float]]], height: int, width: int) -> BoolArray:
    """Each component is rings (exterior, then holes) of pixel-corner vertices; filling every ring
    and XOR-ing them is the even-odd rule, which gives back the exact mask."""
    filled = np.zeros((height, width), dtype=bool)
    with _quiet_pycocotools():
        for rings in components:
            for ring in rings:
                rle = coco_mask.frPyObjects([list(ring)], height, width)
                filled ^= np.asarray(coco_mask.decode(rle)[:, :, 0], dtype=bool)
    return filled


def _decode_png(data: str) -> BoolArray:
    try:
        from PIL import Image
    except ImportError as missing:
        raise ImportError("PNG masks need Pillow: pip install 'sam3-client[images]'") from missing
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("L")) > 0
