"""Mask encodings for responses: COCO RLE (default), polygons, PNG.

COCO RLE runs over each mask in column-major order, so the plain path,
``pycocotools.mask.encode(np.asfortranarray(masks))``, first copies every mask to host memory
in column-major layout (about 0.4 s for 100 masks at 1920x1080 here) and then scans it.
:func:`encode_rle` avoids what it can, depending on where the masks are:

* on a GPU (where the model runs), run boundaries are found with vectorised comparisons on the
  device, without a transposed copy, and only the boundary positions (a few per column) cross to
  the host, where pycocotools compresses the counts;
* on the CPU, where that scan is slower than pycocotools' own C loop, the masks are transposed
  once by torch (one multi-threaded copy, already in the layout pycocotools wants, so it copies
  nothing more) and encoded by pycocotools.

Both are byte-identical to the plain path (tested).
"""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as coco_mask


RLE = dict[str, Any]  # {"size": [height, width], "counts": str}


def _counts_from_boundaries(first_is_set: bool, boundaries: np.ndarray, total: int) -> list[int]:
    edges = np.concatenate(([0], boundaries, [total]))
    counts = np.diff(edges).tolist()
    return [0, *counts] if first_is_set else counts


def encode_rle(masks: torch.Tensor) -> list[RLE]:
    """COCO RLEs (compressed string counts) of boolean masks shaped [N, H, W]."""
    if masks.ndim != 3:
        raise ValueError("masks must be [N, H, W]")
    if masks.device.type == "cpu":
        return encode_rle_columns_first(masks)
    return encode_rle_run_boundaries(masks)


def encode_rle_columns_first(masks: torch.Tensor) -> list[RLE]:
    """One transposing copy by torch into [N, W, H]: as a numpy array viewed (H, W, N) it is
    Fortran-contiguous, exactly what pycocotools' encoder reads, so it copies nothing more."""
    if masks.shape[0] == 0:
        return []
    columns_first = masks.bool().transpose(1, 2).contiguous().view(torch.uint8).cpu().numpy()
    encoded = coco_mask.encode(columns_first.transpose(2, 1, 0))
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def encode_rle_run_boundaries(masks: torch.Tensor) -> list[RLE]:
    """Run boundaries found on the masks' own device; only their positions move to the host."""
    count, height, width = masks.shape
    if count == 0:
        return []
    masks = masks.bool()
    total = height * width
    # In column-major order, element x*H + y is mask[y, x]. A run ends where an element differs
    # from the one before it: inside a column (y vs y-1), or across columns (row 0 of column x vs
    # the last row of column x-1).
    inside = masks[:, 1:, :] != masks[:, :-1, :]
    n_in, y_in, x_in = inside.nonzero(as_tuple=True)
    across = masks[:, 0, 1:] != masks[:, -1, :-1]
    n_across, x_across = across.nonzero(as_tuple=True)
    instance = torch.cat((n_in, n_across))
    position = torch.cat((x_in * height + y_in + 1, (x_across + 1) * height))
    order = torch.argsort(instance * (total + 1) + position)
    instance, position = instance[order].cpu().numpy(), position[order].cpu().numpy()
    first_set = masks[:, 0, 0].cpu().numpy()
    splits = np.searchsorted(instance, np.arange(count + 1))

    uncompressed = [
        {"size": [height, width], "counts": _counts_from_boundaries(bool(first_set[i]), position[splits[i] : splits[i + 1]], total)}
        for i in range(count)
    ]
    encoded = coco_mask.frPyObjects(uncompressed, height, width)
    return [{"size": [height, width], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def encode_rle_reference(masks: torch.Tensor) -> list[RLE]:
    """The plain pycocotools path; the baseline of benchmarks and tests."""
    array = np.asfortranarray(masks.bool().cpu().numpy().transpose(1, 2, 0).astype(np.uint8))
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in coco_mask.encode(array)]


def decode_rle(rle: RLE) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def encode_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours as flat [x1, y1, x2, y2, ...] lists in pixel coordinates (COCO polygon style)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [contour.reshape(-1).astype(float).tolist() for contour in contours if len(contour) >= 3]


def encode_png(mask: np.ndarray) -> str:
    """A 1-bit-looking PNG (0/255 grey) as base64."""
    ok, buffer = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return base64.b64encode(buffer.tobytes()).decode("ascii")


def encode_masks(masks: torch.Tensor, mask_format: str) -> list[Any]:
    if mask_format == "rle":
        return encode_rle(masks)
    if mask_format == "none":
        return [None] * masks.shape[0]
    host = masks.bool().cpu().numpy()
    encoder = encode_polygons if mask_format == "polygons" else encode_png
    return [encoder(mask) for mask in host]
