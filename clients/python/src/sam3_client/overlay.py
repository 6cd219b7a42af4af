"""A quick look at masks: colour them over the image (needs Pillow)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam3_client.masks import Mask
from sam3_client.models import Frame, Instance, SegmentResult, TrackedObject

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
]


def draw_overlay(
    image: Any, found: SegmentResult | Frame | Iterable[Instance | TrackedObject], *, alpha: float = 0.5, boxes: bool = True,
) -> PILImage:
    """``image`` (a path, bytes, a PIL image or an RGB array) with each instance's mask tinted in its
    own colour, its box outlined and its score written beside it. Returns a new RGB PIL image."""
    try:
        from PIL import Image, ImageDraw
    except ImportError as missing:
        raise ImportError("Overlays need Pillow: pip install 'sam3-client[images]'") from missing
    base: PILImage
    if isinstance(image, bytes):
        base = Image.open(io.BytesIO(image))
    elif isinstance(image, str | Path):
        base = Image.open(image)
    elif isinstance(image, np.ndarray):
        base = Image.fromarray(image)
    else:
        base = image
    items = found.instances if isinstance(found, SegmentResult) else found.objects if isinstance(found, Frame) else list(found)
    pixels = np.asarray(base.convert("RGB"), dtype=np.float32).copy()
    for index, item in enumerate(items):
        mask: Mask = item.mask
        if mask.format == "none":
            continue
        colour = np.array(PALETTE[index % len(PALETTE)], dtype=np.float32)
        area = mask.array
        if area.shape != pixels.shape[:2]:
            raise ValueError(f"mask {area.shape} does not fit the image {pixels.shape[:2]}")
        pixels[area] = pixels[area] * (1 - alpha) + colour * alpha
    result = Image.fromarray(pixels.round().astype(np.uint8))
    if boxes:
        draw = ImageDraw.Draw(result)
        for index, item in enumerate(items):
            colour_tuple = PALETTE[index % len(PALETTE)]
            draw.rectangle(item.box, outline=colour_tuple, width=2)
            label = getattr(item, "label", None)
            text = f"{label + ' ' if label else ''}{item.score:.2f}"
            draw.text((item.box[0] + 3, item.box[1] + 2), text, fill=colour_tuple)
    return result
