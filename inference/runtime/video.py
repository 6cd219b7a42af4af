"""Video sessions on the loaded SAM3: thin wrappers over transformers' inference sessions.

Two kinds, because transformers implements two distinct video modes:

* ``ConceptVideoSession`` - promptable concept segmentation (PCS) over a video with text prompts:
  ``Sam3VideoModel`` + ``Sam3VideoInferenceSession``. Every processed frame runs the detector for
  every text prompt, matches detections to the tracked masklets and lets the tracker propagate
  them; new matches become new object ids.
* ``InteractiveVideoSession`` - SAM2-style tracking of objects the user designates with clicks,
  boxes or masks on any frame (PVS): the ``tracker_model`` inside the same ``Sam3VideoModel``
  with a ``Sam3TrackerVideoInferenceSession``. The tracker has no vision encoder of its own;
  this module feeds it the shared backbone's features through ``tracker_neck`` (a lazily
  filling feature cache), exactly what ``Sam3VideoModel`` does internally.

transformers cannot mix the two in one session (its PCS loop has no click input), so refining a
text-detected object is done by seeding an interactive session with that object's mask
(``InteractiveVideoSession.add_mask``) and clicking there.

Frames are kept as the caller gives them (any ``Sequence`` of uint8 RGB [H, W, 3] arrays, e.g. a
lazy decoder) and preprocessed on demand: transformers would otherwise hold every frame as a
float tensor at the model resolution (12 MB per frame at 1008 px in float32).

Second text prompt (transformers' behaviour, verified in its code): prompts accumulate; each
frame is detected with all of them, objects remember which prompt found them, matching and the
non-overlap constraint work per prompt. Nothing is recomputed for frames already propagated, so
``ConceptVideoSession.add_text_prompt`` restarts tracking by default (objects, memory and ids are
cleared, prompts kept) so that the next propagation covers every prompt from its first frame.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
        Sam3TrackerVideoSegmentationOutput,
    )

from .bounded_state import StateBound
from .engine import Box, Instances, Point, check_text_prompt, masks_to_boxes
from .loader import LoadedSam3


class LazyFrames(Mapping[int, torch.Tensor]):
    """``{frame_index: preprocessed frame [3, S, S]}`` computed on access, last few kept.

    Stands in for the ``processed_frames`` dict of transformers' sessions, which only index it,
    take its ``len`` and assign streamed frames.
    """

    def __init__(self, loaded: LoadedSam3, frames: Sequence[np.ndarray], keep: int = 4) -> None:
        if len(frames) == 0:
            raise ValueError("a video needs at least one frame")
        first = np.asarray(frames[0])
        if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
            raise ValueError("video frames must be uint8 RGB arrays of shape [H, W, 3]")
        self._loaded = loaded
        self._frames = frames
        self._added: dict[int, torch.Tensor] = {}
        self._recent: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._keep = keep
        self.size = (int(first.shape[0]), int(first.shape[1]))

    def __len__(self) -> int:
        return max(len(self._frames), max(self._added, default=-1) + 1)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def __setitem__(self, index: int, value: torch.Tensor) -> None:  # streamed frames
        self._added[index] = value

    def forget_before(self, index: int) -> None:
        """Drop streamed frames before ``index`` (the length stays: transformers only asks that)."""
        for old in [i for i in self._added if i < index]:
            del self._added[old]

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self._added:
            return self._added[index]
        if not 0 <= index < len(self._frames):
            raise KeyError(index)
        if index in self._recent:
            self._recent.move_to_end(index)
            return self._recent[index]
        frame = np.ascontiguousarray(self._frames[index])
        if frame.shape[:2] != self.size or frame.shape[2:] != (3,) or frame.dtype != np.uint8:
            raise ValueError(f"frame {index} is {frame.shape} {frame.dtype}; every frame must be {(*self.size, 3)} uint8")
        processed = self._loaded.video_processor.video_processor(videos=[frame[np.newaxis]], return_tensors="pt")
        tensor = processed["pixel_values_videos"][0][0].to(dtype=self._loaded.dtype)
        self._recent[index] = tensor
        while len(self._recent) > self._keep:
            self._recent.popitem(last=False)
        return tensor


@contextmanager
def _bounded_pass(bound: StateBound | None, start_frame: int | None) -> Iterator[None]:
    """Record a propagation pass's start and end as anchors of the state bound (None: unbounded)."""
    if bound is None:
        yield
        return
    bound.begin_pass(start_frame)
    try:
        yield
    finally:
        bound.end_pass()


def _check_frame_index(index: int, num_frames: int) -> int:
    if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < num_frames:
        raise ValueError(f"frame index {index!r} is outside the video (0..{num_frames - 1})")
    return int(index)


def set_temporal_disambiguation(loaded: LoadedSam3, enabled: bool) -> None:
    """SAM3's temporal disambiguation heuristics on/off (VIDEO_MODEL_TEMPORAL_DISAMBIGUATION).

    On (the checkpoint's config, as published): outputs are held back ``hotstart_delay`` (15)
    frames so tracks unmatched by detections or duplicating another in that window are dropped,
    and every 16th frame confident detections recondition the tracker. Off mirrors Meta's
    ``apply_temporal_disambiguation=False``: no hold-back, no removal, no reconditioning, each
    frame is yielded as soon as it is processed. Applies to every session of this model.
    """
    model, config = loaded.model, loaded.model.config
    names = ("hotstart_delay", "hotstart_unmatch_thresh", "hotstart_dup_thresh", "recondition_every_nth_frame")
    for name in names:
        setattr(model, name, getattr(config, name) if enabled else 0)


# --------------------------------------------------------------------------- concept (text) sessions


class ConceptVideoSession:
    """Text-prompted detection + tracking over a video (SAM3 PCS).

    ``state_device`` holds the per-frame tracking state (default: the model device; "cpu" moves
    it to host memory at some speed cost). ``keep_history`` bounds that state to N frames behind
    the current one and around anchors (see ``bounded_state``); None keeps everything like
    transformers.
    """

    def __init__(
        self,
        loaded: LoadedSam3,
        frames: Sequence[np.ndarray],
        *,
        state_device: str | torch.device | None = None,
        keep_history: int | None = None,
    ) -> None:
        from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

        self.loaded = loaded
        self._frames = LazyFrames(loaded, frames)
        height, width = self._frames.size
        self.session = Sam3VideoInferenceSession(
            video=None,
            video_height=height,
            video_width=width,
            inference_device=loaded.device,
            inference_state_device=state_device or loaded.device,
            video_storage_device="cpu",
            dtype=loaded.dtype,
        )
        self.session.processed_frames = self._frames  # type: ignore[assignment]  # a lazy Mapping: sessions only index it
        self.bound = None if keep_history is None else StateBound(self.session, keep_history)

    @property
    def num_frames(self) -> int:
        return len(self._frames)

    @property
    def prompts(self) -> list[str]:
        return list(self.session.prompts.values())

    @property
    def object_ids(self) -> list[int]:
        return list(self.session.obj_ids)

    def add_text_prompt(self, text: str, *, restart: bool = True) -> list[str]:
        """Add a concept; returns all prompts. ``restart`` clears tracking (see module doc)."""
        text = (text or "").strip()
        if not text:
            raise ValueError("text prompt is empty")
        check_text_prompt(self.loaded, text)
        is_new = text not in self.session.prompts.values()
        self.loaded.video_processor.add_text_prompt(self.session, text)
        if is_new and restart:
            self.reset(keep_prompts=True)
        return self.prompts

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking ``obj_id``. The detector may find the same thing again as a new id."""
        if int(obj_id) not in self.session.obj_ids:
            raise KeyError(f"unknown object id {obj_id}")
        self.session.remove_object(int(obj_id), strict=True)
        self.session.obj_id_to_score.pop(int(obj_id), None)

    def reset(self, *, keep_prompts: bool = False) -> None:
        """Forget objects, memories and ids (and prompts unless ``keep_prompts``); keep frames."""
        prompts = self.prompts
        self.session.reset_state()
        # reset_state leaves these behind / sets max_obj_id to 0 where a new session has -1.
        self.session.hotstart_removed_obj_ids = set()
        self.session.max_obj_id = -1
        if keep_prompts and prompts:
            self.loaded.video_processor.add_text_prompt(self.session, prompts)

    def propagate(
        self, *, start_frame: int = 0, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[tuple[int, Instances]]:
        """Yield ``(frame_index, Instances)`` frame by frame.

        Forward covers ``start_frame..`` ; reverse covers ``start_frame - 1`` down to 0 (the
        start frame itself is expected to be done by a forward pass), like transformers. Outputs
        are held back up to ``hotstart_delay`` (15) frames: SAM3 uses them to drop tracks that
        turn out to be spurious or duplicates before anything is shown. ``Instances.object_ids``
        and ``labels`` (the prompt text) identify the objects.
        """
        if not self.session.prompts:
            raise ValueError("add a text prompt before propagating")
        start = _check_frame_index(start_frame, self.num_frames)
        model = self.loaded.model
        with _bounded_pass(self.bound, start):
            yield from self._propagate(model, start, reverse, max_frames)

    def _propagate(self, model: Any, start: int, reverse: bool, max_frames: int | None) -> Iterator[tuple[int, Instances]]:
        for output in model.propagate_in_video_iterator(
            inference_session=self.session,
            start_frame_idx=start,
            max_frame_num_to_track=max_frames,
            reverse=reverse,
        ):
            if self.bound is not None:
                self.bound.after_frame(int(output.frame_idx), reverse)
            yield int(output.frame_idx), self.instances(output)

    def instances(self, output: Any) -> Instances:
        """One frame's output of the model as ``Instances``: ``object_ids`` and ``labels`` (the
        prompt text that found each object) identify the objects."""
        with torch.inference_mode():
            processed = self.loaded.video_processor.postprocess_outputs(self.session, output)
        object_ids = processed["object_ids"]
        labels = {obj_id: text for text, ids in processed["prompt_to_obj_ids"].items() for obj_id in ids}
        return Instances(
            scores=processed["scores"].float().cpu(),
            boxes=processed["boxes"].float().cpu(),
            masks=processed["masks"],
            object_ids=object_ids.cpu(),
            labels=[labels[int(i)] for i in object_ids.tolist()],
        )


# --------------------------------------------------------------------------- interactive sessions


class _BackboneFeatureCache:
    """Tracker feature cache that computes a frame's features from the shared backbone on a miss."""

    def __init__(self, loaded: LoadedSam3, frames: LazyFrames, keep: int = 2) -> None:
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceCache,
        )

        self._loaded = loaded
        self._frames = frames
        self._inner = Sam3TrackerVideoInferenceCache(
            inference_device=loaded.device, inference_state_device=loaded.device, max_vision_features_cache_size=keep
        )

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:
        self._inner.cache_vision_features(frame_idx, features)

    def get_vision_features(self, frame_idx: int) -> dict | None:
        cached = self._inner.get_vision_features(frame_idx)
        if cached is not None:
            return cached
        pixels = self._frames[frame_idx].to(self._loaded.device).unsqueeze(0)
        with torch.inference_mode():
            vision = self._loaded.detector.get_vision_features(pixel_values=pixels)
            feats, positions = self._loaded.model.get_vision_features_for_tracker(vision_embeds=vision)
        self._inner.cache_vision_features(frame_idx, {"vision_feats": feats, "vision_pos_embeds": positions})
        return self._inner.get_vision_features(frame_idx)

    def clear_all(self) -> None:
        self._inner.clear_all()


class InteractiveVideoSession:
    """Track user-designated objects (clicks / boxes / masks on any frame) through a video.

    ``state_device`` holds the per-frame tracking state (default: the model device; "cpu" moves
    it to host memory at some speed cost). ``keep_history`` bounds that state to N frames behind
    the current one and around anchors (see ``bounded_state``); None keeps everything like
    transformers.
    """

    def __init__(
        self,
        loaded: LoadedSam3,
        frames: Sequence[np.ndarray],
        *,
        state_device: str | torch.device | None = None,
        keep_history: int | None = None,
    ) -> None:
        from transformers import Sam3TrackerVideoProcessor
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        self.loaded = loaded
        self._frames = LazyFrames(loaded, frames)
        height, width = self._frames.size
        self.processor = Sam3TrackerVideoProcessor(
            image_processor=loaded.processor.image_processor,
            video_processor=loaded.video_processor.video_processor,
        )
        self.session = Sam3TrackerVideoInferenceSession(
            video=None,
            video_height=height,
            video_width=width,
            inference_device=loaded.device,
            inference_state_device=state_device or loaded.device,
            video_storage_device="cpu",
            dtype=loaded.dtype,
        )
        self.session.processed_frames = self._frames  # type: ignore[assignment]  # a lazy Mapping: sessions only index it
        # Duck-typed stand-in (same methods) that fills itself from the shared backbone.
        self.session.cache = _BackboneFeatureCache(loaded, self._frames)  # type: ignore[assignment]
        self.bound = None if keep_history is None else StateBound(self.session, keep_history)

    @property
    def num_frames(self) -> int:
        return len(self._frames)

    @property
    def object_ids(self) -> list[int]:
        return list(self.session.obj_ids)

    def frame_instances(self, output: Sam3TrackerVideoSegmentationOutput) -> Instances:
        # Optional in the output class, always set by the tracker's forward.
        assert output.pred_masks is not None and output.object_score_logits is not None
        height, width = self._frames.size
        masks = self.processor.post_process_masks([output.pred_masks], original_sizes=[[height, width]])[0]
        masks = masks[:, 0]  # [objects, H, W]
        return Instances(
            scores=output.object_score_logits.float().sigmoid().reshape(-1).cpu(),
            boxes=masks_to_boxes(masks).cpu(),
            masks=masks,
            object_ids=torch.tensor(output.object_ids, dtype=torch.int64),
        )

    def _run_frame(self, frame_index: int) -> Instances:
        with torch.inference_mode():
            output = self.loaded.tracker(inference_session=self.session, frame_idx=frame_index)
        if self.bound is not None:
            self.bound.after_frame(frame_index, reverse=False)
        return self.frame_instances(output)

    def add_prompt(
        self,
        frame_index: int,
        obj_id: int,
        *,
        points: Sequence[Point] | None = None,
        point_labels: Sequence[int] | None = None,
        box: Box | None = None,
        clear_old: bool = True,
    ) -> Instances:
        """Clicks and/or a box for ``obj_id`` on a frame; returns every object's mask there.

        ``clear_old=False`` adds the clicks to the ones already given for this object on this
        frame (a box always replaces them: SAM wants the box before any click).
        """
        frame_index = _check_frame_index(frame_index, self.num_frames)
        clicks = [list(map(float, p)) for p in (points or [])]
        if not clicks and box is None:
            raise ValueError("an interactive prompt needs points, a box, or both")
        labels = [1] * len(clicks) if point_labels is None else [int(v) for v in point_labels]
        if len(labels) != len(clicks) or any(v not in (0, 1) for v in labels):
            raise ValueError("point_labels must give 1 (object) or 0 (background) for each point")
        self.processor.add_inputs_to_inference_session(
            self.session,
            frame_idx=frame_index,
            obj_ids=int(obj_id),
            input_points=[[clicks]] if clicks else None,
            input_labels=[[labels]] if clicks else None,
            input_boxes=[[list(map(float, box))]] if box is not None else None,
            clear_old_inputs=clear_old if box is None else True,
        )
        return self._run_frame(frame_index)

    def add_mask(self, frame_index: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> Instances:
        """Designate ``obj_id`` by a bool mask [H, W] at the video resolution (e.g. a PCS result)."""
        frame_index = _check_frame_index(frame_index, self.num_frames)
        mask = torch.as_tensor(mask)
        if tuple(mask.shape) != self._frames.size:
            raise ValueError(f"mask must be {self._frames.size}, got {tuple(mask.shape)}")
        self.processor.add_inputs_to_inference_session(
            self.session, frame_idx=frame_index, obj_ids=int(obj_id), input_masks=mask.bool().cpu()
        )
        return self._run_frame(frame_index)

    def remove_object(self, obj_id: int) -> None:
        """Forget ``obj_id`` on every frame (inputs, memories); other objects keep theirs."""
        if int(obj_id) not in self.session.obj_ids:
            raise KeyError(f"unknown object id {obj_id}")
        remaining = {
            oid: self._inputs_of(oid) for oid in self.session.obj_ids if oid != int(obj_id)
        }
        # transformers' tracker session has no per-object removal: rebuild it with the other
        # objects' inputs; their memories are recomputed on the next propagation.
        self.reset()
        for oid, (points_by_frame, masks_by_frame) in remaining.items():
            idx = self.session.obj_id_to_idx(oid)
            for frame, inputs in points_by_frame.items():
                self.session.add_point_inputs(idx, frame, inputs)
            for frame, mask in masks_by_frame.items():
                self.session.add_mask_inputs(idx, frame, mask)
        self.session.obj_with_new_inputs = list(remaining)
        self._rerun_prompted_frames()

    def _inputs_of(self, obj_id: int) -> tuple[dict[int, dict[str, Any]], dict[int, torch.Tensor]]:
        idx = self.session.obj_id_to_idx(obj_id)
        return dict(self.session.point_inputs_per_obj[idx]), dict(self.session.mask_inputs_per_obj[idx])

    def _rerun_prompted_frames(self) -> None:
        frames = sorted(
            {f for per in self.session.point_inputs_per_obj.values() for f in per}
            | {f for per in self.session.mask_inputs_per_obj.values() for f in per}
        )
        for frame in frames:
            # Like a fresh add_inputs call on that frame: only objects prompted there are "new".
            self.session.obj_with_new_inputs = [
                oid
                for oid in self.session.obj_ids
                if frame in self.session.point_inputs_per_obj[self.session.obj_id_to_idx(oid)]
                or frame in self.session.mask_inputs_per_obj[self.session.obj_id_to_idx(oid)]
            ]
            self._run_frame(frame)

    def reset(self) -> None:
        """Forget every object and input; keep the frames."""
        self.session.reset_inference_session()
        self.session.point_inputs_per_obj.clear()
        self.session.mask_inputs_per_obj.clear()
        self.session.obj_with_new_inputs = []

    def propagate(
        self, *, start_frame: int | None = None, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[tuple[int, Instances]]:
        """Yield ``(frame_index, Instances)`` frame by frame, forward or backward.

        ``start_frame`` defaults to the earliest prompted frame. Unlike concept sessions the
        start frame is included in both directions.
        """
        if not self.session.obj_ids:
            raise ValueError("add a prompt for at least one object before propagating")
        if start_frame is not None:
            start_frame = _check_frame_index(start_frame, self.num_frames)
        # Without a start frame the pass starts on a prompted frame, which is an anchor already.
        with _bounded_pass(self.bound, start_frame), torch.inference_mode():
            for output in self.loaded.tracker.propagate_in_video_iterator(
                inference_session=self.session,
                start_frame_idx=start_frame,
                max_frame_num_to_track=max_frames,
                reverse=reverse,
            ):
                if self.bound is not None:
                    self.bound.after_frame(int(output.frame_idx), reverse)
                yield int(output.frame_idx), self.frame_instances(output)
