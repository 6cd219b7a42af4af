"""A frame's objects as clients receive them (same shapes as the image API)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference.masks import encode_masks
from inference.runtime.engine import Instances


def objects_payload(parts: Sequence[Instances], mask_format: str = "rle") -> list[dict[str, Any]]:
    """Every tracker's objects on one frame ({id, score, box, mask, label?}), masks in ``mask_format``."""
    objects: list[dict[str, Any]] = []
    for instances in parts:
        if len(instances) == 0:
            continue
        masks = encode_masks(instances.masks, mask_format)
        ids = instances.object_ids.tolist() if instances.object_ids is not None else [None] * len(instances)
        labels: Sequence[str | None] = instances.labels or [None] * len(instances)
        for object_id, score, box, mask, label in zip(
            ids, instances.scores.tolist(), instances.boxes.tolist(), masks, labels, strict=True
        ):
            item = {"id": object_id, "score": round(float(score), 6), "box": [round(float(v), 2) for v in box], "mask": mask}
            if label is not None:
                item["label"] = label
            objects.append(item)
    objects.sort(key=lambda item: (item["id"] is None, item["id"]))
    return objects


def frame_payload(frame: int, parts: list[Instances]) -> dict[str, Any]:
    return {"frame": frame, "objects": objects_payload(parts)}
