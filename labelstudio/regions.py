"""Label Studio result regions (the ``result`` items of a prediction) from SAM3's masks and boxes.

Coordinates are Label Studio's: percentages of the image (or video frame) size; brush masks are its
RLE (labelstudio.rle); video keyframes are numbered from 1.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from labelstudio.label_config import Control
from labelstudio.rle import mask_to_rle

MIN_POLYGON_POINTS = 3


def decode_coco_rle(rle: dict[str, Any]) -> np.ndarray:
    """The server's COCO RLE ({size, counts}) as an H x W uint8 mask."""
    counts = rle["counts"]
    return coco_mask.decode({"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts})


def _region(control: Control, kind: str, value: dict[str, Any], width: int, height: int, score: float | None) -> dict[str, Any]:
    region: dict[str, Any] = {
        "id": secrets.token_urlsafe(6), "from_name": control.name, "to_name": control.to_name, "type": kind,
        "original_width": width, "original_height": height, "value": value,
    }
    if kind != "videorectangle":  # image regions say how the image was shown
        region["image_rotation"] = 0
    if score is not None:
        region["score"] = round(float(score), 4)
    return region


def brush(control: Control, label: str, mask: np.ndarray, score: float | None) -> dict[str, Any]:
    height, width = mask.shape
    value = {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]}
    return _region(control, "brushlabels", value, width, height, score)


def polygons(control: Control, label: str, mask: np.ndarray, score: float | None) -> list[dict[str, Any]]:
    """One polygon per outer contour (Label Studio polygons have no holes)."""
    height, width = mask.shape
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    regions = []
    for contour in contours:
        points = contour.reshape(-1, 2)
        if len(points) < MIN_POLYGON_POINTS:
            continue
        value = {
            "points": [[round(x * 100 / width, 4), round(y * 100 / height, 4)] for x, y in points.tolist()],
            "closed": True, "polygonlabels": [label],
        }
        regions.append(_region(control, "polygonlabels", value, width, height, score))
    return regions


def percent_box(box: Sequence[float], width: int, height: int) -> dict[str, float]:
    x1, y1, x2, y2 = box
    return {
        "x": round(x1 * 100 / width, 4), "y": round(y1 * 100 / height, 4),
        "width": round((x2 - x1) * 100 / width, 4), "height": round((y2 - y1) * 100 / height, 4), "rotation": 0,
    }


def rectangle(control: Control, label: str, box: Sequence[float], width: int, height: int, score: float | None) -> dict[str, Any]:
    return _region(control, "rectanglelabels", {**percent_box(box, width, height), "rectanglelabels": [label]}, width, height, score)


def mask_regions(control: Control, label: str, mask: np.ndarray, box: Sequence[float], score: float | None) -> list[dict[str, Any]]:
    """The regions ``control`` takes for one object."""
    if control.tag == "BrushLabels":
        return [brush(control, label, mask, score)]
    if control.tag == "PolygonLabels":
        return polygons(control, label, mask, score)
    height, width = mask.shape
    return [rectangle(control, label, box, width, height, score)]


def video_rectangle(
    control: Control, label: str | None, boxes: dict[int, Sequence[float] | None], *, width: int, height: int,
    frame_count: int, fps: float, score: float | None,
) -> dict[str, Any]:
    """One tracked object as a keyframe sequence: a keyframe on every frame computed (``boxes``: frame
    index from 0 -> box, None where the object is not seen), disabled where it disappears."""
    sequence: list[dict[str, Any]] = []
    for frame in sorted(boxes):
        box = boxes[frame]
        time = round(frame / fps, 6) if fps else 0.0
        if box is not None:
            sequence.append({"frame": frame + 1, "enabled": True, "time": time, **percent_box(box, width, height)})
        elif sequence and sequence[-1]["enabled"]:  # the last box stays, switched off from here
            sequence.append({**sequence[-1], "frame": frame + 1, "enabled": False, "time": time})
    value: dict[str, Any] = {"sequence": sequence, "framesCount": frame_count, "duration": round(frame_count / fps, 6) if fps else 0}
    if label is not None:
        value["labels"] = [label]
    return _region(control, "videorectangle", value, width, height, score)
