"""Image inference on a loaded SAM3: backbone once, then any number of prompts.

``compute_image_features`` runs the ViT + FPN necks once per image. The result feeds both heads:

* ``segment_concept``: promptable concept segmentation (text and/or exemplar boxes) through the
  detector, i.e. ``Sam3Model.forward(vision_embeds=...)``;
* ``segment_interactive``: SAM-style clicks / a box through the tracker's prompt encoder and mask
  decoder, i.e. what ``Sam3TrackerModel.forward(image_embeddings=...)`` computes, but with the
  tracker weights of the one loaded ``Sam3VideoModel``.

Exactness: every tensor op is the one transformers' ordinary path runs (processor -> model ->
processor post-processing); only the order in which they are scheduled changes. The tests check
the masks are bit-identical to the ordinary path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own idiom)

from inference.jobs import TEXT_PROMPT_MAX_TOKENS, text_prompt_too_long_message

from .loader import LoadedSam3, detector_text_config
from .mask_postprocessing import fill_interactive_holes

if TYPE_CHECKING:
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput, Sam3VisionEncoderOutput

# Text the SAM3 processor substitutes when only exemplar boxes are given.
VISUAL_PROMPT_TEXT = "visual"
# Masks are upsampled to full resolution this many at a time, to bound the float scratch memory
# (the ordinary post-processing upsamples all kept masks at once: N x H x W floats).
_MASK_UPSAMPLE_CHUNK = 16

Box = Sequence[float]  # x1, y1, x2, y2 in original image pixels
Point = Sequence[float]  # x, y in original image pixels


@dataclass
class ImageFeatures:
    """Backbone output for one image, enough for every prompt kind.

    ``fpn``: the detector neck's 4 FPN levels ([1, C, h, w]); ``tracker``: the tracker neck's 3
    image embeddings as the tracker's mask decoder consumes them (level 0/1 already projected by
    conv_s0/conv_s1, "no memory" embedding added to the last) or None if not computed. The
    sine position encodings are not stored: they depend only on shape and are rebuilt (cached by
    transformers) when needed.
    """

    original_size: tuple[int, int]  # (height, width) of the image as given
    fpn: tuple[torch.Tensor, ...]
    tracker: tuple[torch.Tensor, ...] | None

    @property
    def device(self) -> torch.device:
        return self.fpn[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.fpn[0].dtype

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors (each storage counted once)."""
        seen: dict[int, int] = {}
        for tensor in (*self.fpn, *(self.tracker or ())):
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return sum(seen.values())

    def to(self, device: torch.device | str) -> ImageFeatures:
        """A copy on ``device`` (e.g. to park cache entries in host memory)."""
        return ImageFeatures(
            original_size=self.original_size,
            fpn=tuple(t.to(device) for t in self.fpn),
            tracker=None if self.tracker is None else tuple(t.to(device) for t in self.tracker),
        )


@dataclass
class Instances:
    """Segmentation results for one image (image results: best score first).

    ``scores`` float32 [N] and ``boxes`` float32 [N, 4] (xyxy, original image pixels) are on the
    CPU; ``masks`` bool [N, H, W] at the original resolution stays on the model device so it can
    be encoded (RLE, PNG) there. For interactive results ``scores`` are the predicted IoUs and
    ``object_score`` is the tracker's "object present" probability. Video results add
    ``object_ids`` (int64 [N], stable across frames) and, for text prompts, ``labels`` (the prompt
    text that found each object).
    """

    scores: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor
    object_score: float | None = None
    object_ids: torch.Tensor | None = None
    labels: list[str] | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])

    def cpu(self) -> Instances:
        return dataclasses.replace(self, masks=self.masks.cpu())


# --------------------------------------------------------------------------- features


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("image must be a uint8 numpy array of shape [H, W, 3] (RGB)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("image is empty")
    return np.ascontiguousarray(image)


def _pixel_values(loaded: LoadedSam3, images: list[np.ndarray]) -> torch.Tensor:
    # Preprocess on the CPU like the ordinary processor call does: resizing on the GPU would
    # round differently and break exactness with the reference path.
    batch = loaded.processor.image_processor(images=images, return_tensors="pt")
    return batch["pixel_values"].to(loaded.device, dtype=loaded.dtype)


@torch.inference_mode()
def _features_from_pixels(
    loaded: LoadedSam3, pixel_values: torch.Tensor, include_tracker: bool
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...] | None]:
    vision = loaded.detector.get_vision_features(pixel_values=pixel_values)
    tracker_levels = None
    if include_tracker:
        tracker_levels = _tracker_image_embeddings(loaded, vision)
    return tuple(vision.fpn_hidden_states), tracker_levels


def _tracker_image_embeddings(loaded: LoadedSam3, vision: Sam3VisionEncoderOutput) -> tuple[torch.Tensor, ...]:
    """What Sam3TrackerModel.forward builds from pixel_values, from the shared backbone output."""
    tracker = loaded.tracker
    # transformers annotates vision_embeds as a Tensor but reads the encoder output object it is given.
    feature_maps, _ = loaded.model.get_vision_features_for_tracker(vision_embeds=vision)  # type: ignore[arg-type]
    feature_maps = list(feature_maps)
    feature_maps[-1] = feature_maps[-1] + tracker.no_memory_embedding
    assert vision.last_hidden_state is not None  # always set by get_vision_features
    batch = vision.last_hidden_state.shape[0]
    return tuple(
        feat.permute(1, 2, 0).reshape(batch, -1, *size)
        for feat, size in zip(feature_maps, tracker.backbone_feature_sizes)
    )


def compute_image_features(
    loaded: LoadedSam3, image: np.ndarray, *, include_tracker: bool = True
) -> ImageFeatures:
    """Run the vision backbone once on an RGB uint8 image [H, W, 3].

    ``include_tracker=False`` skips the tracker neck (about as costly as the detector neck, and
    ~15% more feature memory) when only text/box prompts will follow.
    """
    image = _check_image(image)
    fpn, tracker = _features_from_pixels(loaded, _pixel_values(loaded, [image]), include_tracker)
    return ImageFeatures(original_size=(image.shape[0], image.shape[1]), fpn=fpn, tracker=tracker)


def compute_image_features_batch(
    loaded: LoadedSam3, images: Sequence[np.ndarray], *, include_tracker: bool = True
) -> list[ImageFeatures]:
    """One backbone forward for several images (any sizes: all are resized to the model input).

    The batch forward may round differently from single-image forwards in the last bits (matmul
    blocking depends on the batch size), so results equal the batched ordinary path, not
    necessarily the single-image one. Each returned entry owns its tensors (cloned slices).
    """
    checked = [_check_image(image) for image in images]
    if not checked:
        return []
    fpn, tracker = _features_from_pixels(loaded, _pixel_values(loaded, checked), include_tracker)
    out = []
    for i, image in enumerate(checked):
        out.append(
            ImageFeatures(
                original_size=(image.shape[0], image.shape[1]),
                fpn=tuple(level[i : i + 1].clone() for level in fpn),
                tracker=None if tracker is None else tuple(level[i : i + 1].clone() for level in tracker),
            )
        )
    return out


def _vision_embeds(loaded: LoadedSam3, features: ImageFeatures) -> Sam3VisionEncoderOutput:
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    neck = loaded.detector.vision_encoder.neck
    positions = tuple(neck.position_encoding(level.shape, level.device, level.dtype) for level in features.fpn)
    return Sam3VisionEncoderOutput(fpn_hidden_states=features.fpn, fpn_position_encoding=positions)


def _to_model(loaded: LoadedSam3, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Move processor outputs to the model: floats take the model dtype (as `.to(device, dtype)`)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(loaded.device, dtype=loaded.dtype) if value.is_floating_point() else value.to(loaded.device)
        out[key] = value
    return out


# --------------------------------------------------------------------------- concept prompts


class PromptTooLong(ValueError):
    """A text prompt longer than the text encoder reads (transformers' own error names its internals)."""

    code = "prompt_too_long"

    def __init__(self, tokens: int, limit: int) -> None:
        self.tokens, self.limit = tokens, limit
        super().__init__(text_prompt_too_long_message(tokens, limit))


def text_token_limit(loaded: LoadedSam3) -> int:
    """Tokens (start/end markers included) a text prompt may have: what the processors keep and
    the text encoder has positions for."""
    positions = int(detector_text_config(loaded.model.config).max_position_embeddings)
    return min(TEXT_PROMPT_MAX_TOKENS, positions)


def check_text_prompt(loaded: LoadedSam3, text: str) -> int:
    """The prompt's token count; ``PromptTooLong`` (a ValueError) when the text encoder cannot read it whole."""
    tokens = len(loaded.tokenizer(text, verbose=False)["input_ids"])
    limit = text_token_limit(loaded)
    if tokens > limit:
        raise PromptTooLong(tokens, limit)
    return tokens


def _check_box(box: Box, name: str = "box") -> list[float]:
    values = [float(v) for v in box]
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(f"{name} must be 4 finite numbers x1, y1, x2, y2")
    if values[2] <= values[0] or values[3] <= values[1]:
        raise ValueError(f"{name} must have x2 > x1 and y2 > y1")
    return values


def _instances_from_detector(
    outputs: Sam3ImageSegmentationOutput, size: tuple[int, int], threshold: float, mask_threshold: float
) -> Instances:
    """``Sam3ImageProcessor.post_process_instance_segmentation`` for one image, chunked.

    Same ops in the same order (scores = sigmoid(logits) * sigmoid(presence), keep > threshold,
    sigmoid masks, bilinear upsample, > mask_threshold); bilinear interpolation is independent
    per mask, so upsampling in chunks gives identical bits with bounded scratch memory.
    """
    # Optional in the output class, always set by Sam3Model.forward.
    assert outputs.pred_logits is not None and outputs.pred_boxes is not None and outputs.pred_masks is not None
    scores = outputs.pred_logits.sigmoid()
    if outputs.presence_logits is not None:
        scores = scores * outputs.presence_logits.sigmoid()
    scores, boxes, mask_logits = scores[0], outputs.pred_boxes[0], outputs.pred_masks[0]
    keep = scores > threshold
    scores, boxes, mask_logits = scores[keep], boxes[keep], mask_logits[keep]

    # Best score first, ordered before upsampling so the full-resolution masks are never copied again.
    order = torch.argsort(scores.float(), descending=True, stable=True)
    scores, boxes, mask_logits = scores[order], boxes[order], mask_logits[order]

    height, width = size
    scale = torch.tensor([width, height, width, height], device=boxes.device)
    boxes = boxes * scale
    probabilities = mask_logits.sigmoid()
    masks = torch.empty((probabilities.shape[0], height, width), dtype=torch.bool, device=probabilities.device)
    for start in range(0, probabilities.shape[0], _MASK_UPSAMPLE_CHUNK):
        chunk = probabilities[start : start + _MASK_UPSAMPLE_CHUNK]
        upsampled = F.interpolate(chunk.unsqueeze(0), size=[height, width], mode="bilinear", align_corners=False)
        masks[start : start + chunk.shape[0]] = upsampled.squeeze(0) > mask_threshold

    boxes = boxes.float()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return Instances(scores=scores.float().cpu(), boxes=boxes.cpu(), masks=masks)


def segment_concept(
    loaded: LoadedSam3,
    features: ImageFeatures,
    *,
    text: str | None,
    boxes: Sequence[Box] | None = None,
    box_labels: Sequence[int] | None = None,
    threshold: float,
    mask_threshold: float = 0.5,
) -> Instances:
    """Every instance of a concept given by ``text`` and/or exemplar ``boxes``.

    ``box_labels``: 1 = positive exemplar, 0 = negative (default all positive). With boxes and no
    text SAM3 is prompted with the text "visual", as transformers' processor does. ``threshold``
    applies to the combined score (query score x presence score); ``boxes`` in the result are
    clamped to the image. Instances come best score first.
    """
    text = text.strip() if text is not None else None
    boxes = list(boxes or [])
    if not text and not boxes:
        raise ValueError("a concept prompt needs a text, exemplar boxes, or both")
    checked_boxes = [_check_box(box, f"box {i}") for i, box in enumerate(boxes)]
    if box_labels is None:
        labels = [1] * len(checked_boxes)
    else:
        labels = [int(label) for label in box_labels]
        if len(labels) != len(checked_boxes):
            raise ValueError("box_labels must have one label per box")
        if any(label not in (0, 1) for label in labels):
            raise ValueError("box labels must be 1 (positive) or 0 (negative)")
    if text:
        check_text_prompt(loaded, text)

    height, width = features.original_size
    prompt_text = text or VISUAL_PROMPT_TEXT
    prompt: dict[str, Any] = {"text": prompt_text, "original_sizes": [[height, width]], "return_tensors": "pt"}
    if checked_boxes:
        prompt["input_boxes"] = [checked_boxes]
        prompt["input_boxes_labels"] = [labels]
    inputs = _to_model(loaded, loaded.processor(**prompt))
    inputs.pop("original_sizes", None)

    with torch.inference_mode():
        text_embeds = _text_embeds(loaded, prompt_text, inputs.pop("input_ids"), inputs["attention_mask"])
        outputs = loaded.detector(vision_embeds=_vision_embeds(loaded, features), text_embeds=text_embeds, **inputs)
        return _instances_from_detector(outputs, features.original_size, threshold, mask_threshold)


def _text_embeds(
    loaded: LoadedSam3, text: str, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> BaseModelOutputWithPooling:
    """``get_text_features`` output for ``text``, cached: follow-up prompts skip the text encoder."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    cache = loaded.text_cache
    cached = cache.get(text)
    if cached is not None:
        cache.move_to_end(text)
        return cached
    full = loaded.detector.get_text_features(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
    # Sam3Model.forward reads only pooler_output (the projected per-token features).
    cached = BaseModelOutputWithPooling(pooler_output=full.pooler_output)
    cache[text] = cached
    while len(cache) > loaded.text_cache_size:
        cache.popitem(last=False)
    return cached


# --------------------------------------------------------------------------- interactive prompts


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """xyxy boxes (float32, inclusive max like torchvision) of bool masks [N, H, W]; empty -> 0."""
    n, height, width = masks.shape
    boxes = torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    if n == 0:
        return boxes
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    present = rows.any(dim=1)
    y_idx = torch.arange(height, device=masks.device)
    x_idx = torch.arange(width, device=masks.device)
    boxes[:, 0] = torch.where(cols, x_idx, width).amin(dim=1).float()
    boxes[:, 1] = torch.where(rows, y_idx, height).amin(dim=1).float()
    boxes[:, 2] = torch.where(cols, x_idx, -1).amax(dim=1).float()
    boxes[:, 3] = torch.where(rows, y_idx, -1).amax(dim=1).float()
    return torch.where(present[:, None], boxes, torch.zeros_like(boxes))


def segment_interactive(
    loaded: LoadedSam3,
    features: ImageFeatures,
    *,
    points: Sequence[Point] | None = None,
    point_labels: Sequence[int] | None = None,
    box: Box | None = None,
    multimask: bool = False,
) -> Instances:
    """One object from clicks and/or a box (SAM-style), through the tracker head.

    ``point_labels``: 1 = on the object, 0 = background (default all 1). ``multimask=True``
    returns SAM's 3 candidate masks (best predicted IoU first), useful for a single ambiguous
    click; otherwise one mask. Scores are predicted IoUs.
    """
    if features.tracker is None:
        raise ValueError("these features were computed with include_tracker=False")
    points = [list(map(float, p)) for p in (points or [])]
    if not points and box is None:
        raise ValueError("an interactive prompt needs points, a box, or both")
    if any(len(p) != 2 or not np.all(np.isfinite(p)) for p in points):
        raise ValueError("points must be pairs of finite numbers x, y")
    if point_labels is None:
        labels = [1] * len(points)
    else:
        labels = [int(label) for label in point_labels]
        if len(labels) != len(points):
            raise ValueError("point_labels must have one label per point")
        if any(label not in (0, 1) for label in labels):
            raise ValueError("point labels must be 1 (object) or 0 (background)")

    height, width = features.original_size
    prompt: dict = {"original_sizes": [[height, width]], "return_tensors": "pt"}
    if points:
        prompt["input_points"] = [[points]]  # image -> object -> points -> xy
        prompt["input_labels"] = [[labels]]
    if box is not None:
        prompt["input_boxes"] = [[_check_box(box)]]  # image -> boxes -> xyxy
    inputs = _to_model(loaded, loaded.tracker_processor(**prompt))

    tracker = loaded.tracker
    embeddings = features.tracker
    with torch.inference_mode():
        # Sam3TrackerModel.forward from image_embeddings on (image-level prompts, no memory).
        positional = tracker.get_image_wide_positional_embeddings().repeat(embeddings[-1].shape[0], 1, 1, 1)
        sparse, dense = tracker.prompt_encoder(
            input_points=inputs.get("input_points"),
            input_labels=inputs.get("input_labels"),
            input_boxes=inputs.get("input_boxes"),
            input_masks=None,
        )
        low_res_masks, iou_scores, _, object_score_logits = tracker.mask_decoder(
            image_embeddings=embeddings[-1],
            image_positional_embeddings=positional,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=list(embeddings[:-1]),
        )
        if loaded.mask_postprocessing == "meta":
            low_res_masks = fill_interactive_holes(low_res_masks)
        masks = loaded.tracker_processor.post_process_masks(low_res_masks, [[height, width]])[0][0]
        scores = iou_scores[0, 0].float()
        order = torch.argsort(scores, descending=True, stable=True)
        masks, scores = masks[order], scores[order]
        return Instances(
            scores=scores.cpu(),
            boxes=masks_to_boxes(masks).cpu(),
            masks=masks,
            object_score=float(object_score_logits.float().sigmoid().flatten()[0]),
        )


def warmup(loaded: LoadedSam3) -> None:
    """Run every image path once (first CUDA / torch.compile calls are slow)."""
    image = np.zeros((loaded.resolution, loaded.resolution, 3), dtype=np.uint8)
    features = compute_image_features(loaded, image)
    segment_concept(loaded, features, text=VISUAL_PROMPT_TEXT, threshold=1.0)
    segment_interactive(loaded, features, points=[(loaded.resolution / 2, loaded.resolution / 2)])
