"""SAM3's mask post-processing as Meta's ``sam3`` runs it, without a run-time download.

transformers' ``Sam3VideoModel`` runs detection NMS (``nms_masks``, at ``det_nms_thresh`` 0.1) and
hole filling / sprinkle removal (``fill_holes_in_mask_scores``, ``fill_hole_area`` 16) only through
``kernels-community/cv-utils``, a compiled kernel the ``kernels`` package fetches from a hub at run
time; without it transformers keeps every detection and fills no hole, silently but for one log
line. Meta's ``sam3`` always runs both (``sam3/perflib``). This module implements the two
operations that kernel provides with the semantics of Meta's CPU code, and
:func:`install_video_postprocessing` puts them where transformers looks for the kernel (its
module's ``cv_utils_kernel``), once, when the model is loaded.

- :func:`generic_nms` is ``sam3.perflib.nms.generic_nms_cpu``: greedy in the order of numpy's
  ``argsort`` of the scores, reversed (ties broken as Meta's CPU code breaks them), dropping every
  remaining detection whose IoU with a kept one is above the threshold. It always runs on the
  CPU: the IoU matrix is at most queries x queries (200 x 200 for the published model), so one
  small copy costs less than a sequential greedy loop of GPU launches.
- :func:`connected_components` is ``sam3.perflib.connected_components.connected_components_cpu``
  (scikit-image's ``label``): 8-connectivity, labels numbered in raster order of each
  component's first pixel, each pixel's component size (0 on the background). It labels with
  OpenCV's SAUF algorithm, whose union-find keeps the smallest provisional label as a
  component's root, so its numbering is that raster order too. CUDA masks are labelled on the
  CPU and the result copied back: the masks are SAM3's low-resolution ones (288 x 288 at 1008 px
  input), where a copy and one linear pass beat iterative label propagation on the GPU.

Images: Meta's concept (text / exemplar) path post-processes exactly as transformers' does
(threshold, box conversion, bilinear upscale, sigmoid > 0.5; ``sam3/model/sam3_image_processor.py``),
but its click / box path (``SAM3InteractiveImagePredictor``, ``SAM2Transforms.postprocess_masks``)
fills background components of at most 256 low-resolution pixels before upscaling, which
transformers' ``post_process_masks`` accepts as ``max_hole_area`` and ignores:
:func:`fill_interactive_holes` does it.

``MASK_POSTPROCESSING=off`` leaves both paths as transformers runs them.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch
from loguru import logger

MaskPostprocessing = Literal["meta", "off"]
INTERACTIVE_MAX_HOLE_AREA = 256  # SAM3InteractiveImagePredictor's max_hole_area (its max_sprinkle_area is 0)


def generic_nms(
    ious: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5, use_iou_matrix: bool = True
) -> torch.Tensor:
    """Indices (int64, on ``scores``' device) of the detections kept, in the order they were kept."""
    if not use_iou_matrix:
        raise ValueError("generic_nms takes a precomputed IoU matrix (use_iou_matrix=True)")
    if ious.dim() != 2 or ious.shape[0] != ious.shape[1] or scores.shape != (ious.shape[0],):
        raise ValueError(f"generic_nms needs an N x N IoU matrix and N scores, got {tuple(ious.shape)} and {tuple(scores.shape)}")
    iou_rows = ious.detach().float().cpu().numpy()
    order = scores.detach().float().cpu().numpy().argsort()[::-1]
    kept: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        kept.append(best)
        order = rest[iou_rows[best, rest] <= iou_threshold]
    return torch.tensor(kept, dtype=torch.int64, device=scores.device)


def connected_components(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, sizes) of binary masks shaped (B, H, W) or (B, 1, H, W): non-zero is foreground.

    Both results are int32 (as scikit-image labels), shaped and placed like ``masks``."""
    if masks.dim() not in (3, 4) or (masks.dim() == 4 and masks.shape[1] != 1):
        raise ValueError(f"connected_components takes (B, H, W) or (B, 1, H, W) masks, got {tuple(masks.shape)}")
    height, width = masks.shape[-2:]
    host = (masks.detach().reshape(-1, height, width) != 0).to(torch.uint8).cpu().numpy()
    labels = np.zeros(host.shape, dtype=np.int32)
    sizes = np.zeros(host.shape, dtype=np.int32)
    for mask, mask_labels, mask_sizes in zip(host, labels, sizes):
        if height and width:
            _count, _labels, stats, _centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
                mask, 8, cv2.CV_32S, cv2.CCL_SAUF, labels=mask_labels  # written in place
            )
            areas = stats[:, cv2.CC_STAT_AREA].copy()
            areas[0] = 0  # the background has no component size
            np.take(areas, mask_labels, out=mask_sizes)
    return (
        torch.from_numpy(labels).view(masks.shape).to(masks.device),
        torch.from_numpy(sizes).view(masks.shape).to(masks.device),
    )


def fill_interactive_holes(
    low_res_masks: torch.Tensor, *, mask_threshold: float = 0.0, max_hole_area: int = INTERACTIVE_MAX_HOLE_AREA
) -> torch.Tensor:
    """Mask logits (..., H, W) with every background component of at most ``max_hole_area`` pixels
    raised above ``mask_threshold`` (by 10, as Meta does); float32, like Meta's."""
    masks = low_res_masks.float()
    height, width = masks.shape[-2:]
    labels, sizes = connected_components((masks <= mask_threshold).reshape(-1, 1, height, width))
    is_hole = ((labels > 0) & (sizes <= max_hole_area)).reshape(masks.shape)
    return torch.where(is_hole, mask_threshold + 10.0, masks)


class MetaPostprocessingKernel:
    """The two entry points transformers calls on ``kernels-community/cv-utils``."""

    @staticmethod
    def generic_nms(ious: torch.Tensor, scores: torch.Tensor, iou_threshold: float, use_iou_matrix: bool = True) -> torch.Tensor:
        return generic_nms(ious, scores, iou_threshold, use_iou_matrix)

    @staticmethod
    def cc_2d(masks: torch.Tensor, get_counts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return connected_components(masks)


def install_video_postprocessing(mode: MaskPostprocessing) -> None:
    """Make every ``Sam3VideoModel`` of this process run Meta's video post-processing (``meta``) or none (``off``).

    transformers reads its module-level ``cv_utils_kernel`` before each use: an object means "run
    it", ``False`` means "skip" (and never try the hub). Setting it here also keeps transformers
    from logging that the ``kernels`` package is missing."""
    from transformers.models.sam3_video import modeling_sam3_video

    if mode == "meta":
        # transformers annotates it as None, its "not tried yet" value.
        modeling_sam3_video.cv_utils_kernel = MetaPostprocessingKernel()  # type: ignore[assignment]
    elif mode == "off":
        modeling_sam3_video.cv_utils_kernel = False  # type: ignore[assignment]
        logger.info("MASK_POSTPROCESSING=off: video detections are not de-duplicated (NMS), mask holes are not filled")
    else:
        raise ValueError(f"unknown video mask post-processing {mode!r} (meta or off)")
