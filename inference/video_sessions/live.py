"""The model-side state of one video session; only the model thread touches it.

SAM3 in transformers has two video modes that cannot share one inference session, so a live
session combines them:

* text prompts drive SAM3's concept tracker (every instance of the phrase, detected on every
  frame; new instances appear as new object ids);
* exemplar boxes and points/boxes drive the SAM-style tracker: exemplar boxes are detected on
  their frame with the image head and each instance found becomes a tracked object; points and
  boxes without an object id add an object, with an object id they refine it.

Object ids of concept-tracked objects come from SAM3 (small integers); objects of the
interactive tracker get ids from INTERACTIVE_ID_BASE up, so the two never collide.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from django.conf import settings

from inference.legs import Leg
from inference.runtime.engine import Instances, compute_image_features, segment_concept
from inference.runtime.loader import LoadedSam3
from inference.runtime.video import ConceptVideoSession, InteractiveVideoSession
from inference.video_sessions.frames import VideoFrames
from sam3site.errors import Conflict, InvalidInput, NotFound

INTERACTIVE_ID_BASE = 10_000
# Tracking state kept behind the current frame and around anchors (inference.runtime.bounded_state);
# forward tracking reads at most 16 frames back.
KEEP_HISTORY_FRAMES: int | None = 32


@dataclass(frozen=True)
class FrameObjects:
    frame: int
    instances: list[Instances]


class LiveSession:
    def __init__(self, loaded: LoadedSam3, video_path: Path) -> None:
        self.loaded = loaded
        self.frames = VideoFrames(video_path)
        self.concept: ConceptVideoSession | None = None
        self.interactive: InteractiveVideoSession | None = None
        self.next_object_id = INTERACTIVE_ID_BASE
        self.cancel = threading.Event()
        self.state_device = "cpu" if settings.CONFIG.video_state_device == "cpu" else None  # None: the model's

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    def _check_frame(self, frame: int) -> int:
        if not 0 <= frame < self.frame_count:
            raise InvalidInput(
                f"Frame {frame} is outside the video (0..{self.frame_count - 1}).", code="frame_out_of_range",
                detail={"frame_count": self.frame_count},
            )
        return frame

    def _concept(self) -> ConceptVideoSession:
        if self.concept is None:
            self.concept = ConceptVideoSession(
                self.loaded, self.frames, state_device=self.state_device, keep_history=KEEP_HISTORY_FRAMES
            )
        return self.concept

    def _interactive(self) -> InteractiveVideoSession:
        if self.interactive is None:
            self.interactive = InteractiveVideoSession(
                self.loaded, self.frames, state_device=self.state_device, keep_history=KEEP_HISTORY_FRAMES
            )
        return self.interactive

    # --- prompts: each answers with the instances it produced on its frame ---

    def add_text(self, frame: int, text: str) -> Instances:
        """A concept phrase. SAM3 restarts concept tracking when a phrase is added (all phrases are
        kept and tracked together from then on); the answer is this frame's detections for all of them."""
        frame = self._check_frame(frame)
        concept = self._concept()
        concept.add_text_prompt(text, restart=True)
        (_, instances), *_ = list(concept.propagate(start_frame=frame, max_frames=0))
        concept.reset(keep_prompts=True)  # the preview must not leave state a propagation would trip on
        return instances

    def add_exemplars(
        self, frame: int, boxes: list[list[float]], box_labels: list[int], text: str | None, threshold: float
    ) -> Instances:
        """Instances like the exemplars on this frame, each tracked from now on as a new object."""
        frame = self._check_frame(frame)
        features = compute_image_features(self.loaded, self.frames[frame])
        found = segment_concept(self.loaded, features, text=text, boxes=boxes, box_labels=box_labels or None, threshold=threshold)
        interactive = self._interactive()
        result: Instances | None = None
        for mask in found.masks:
            result = interactive.add_mask(frame, self.next_object_id, mask.cpu())
            self.next_object_id += 1
        if result is None:
            return found  # nothing like the exemplars on this frame: nothing to track
        return result

    def add_points(
        self, frame: int, object_id: int | None, points: list[list[float]], point_labels: list[int], box: list[float] | None
    ) -> tuple[int, Instances]:
        frame = self._check_frame(frame)
        interactive = self._interactive()
        if object_id is None:
            object_id, self.next_object_id = self.next_object_id, self.next_object_id + 1
            clear_old = True
        elif object_id in interactive.object_ids:
            clear_old = False  # refine: add these clicks to the object's earlier ones on this frame
        elif self.concept is not None and object_id in self.concept.object_ids:
            raise Conflict(
                f"Object {object_id} was found by a text prompt; SAM3 re-detects such objects on every frame, so "
                "they cannot be refined with clicks. Add points without object_id to track one as its own object.",
                code="not_refinable",
            )
        else:
            raise NotFound(f"Object {object_id} does not exist in this session.", code="unknown_object")
        instances = interactive.add_prompt(
            frame, object_id, points=points or None, point_labels=point_labels or None, box=box, clear_old=clear_old
        )
        return object_id, instances

    def remove_object(self, object_id: int) -> None:
        if self.interactive is not None and object_id in self.interactive.object_ids:
            self.interactive.remove_object(object_id)
        elif self.concept is not None and object_id in self.concept.object_ids:
            self.concept.remove_object(object_id)
        else:
            raise NotFound(f"Object {object_id} does not exist in this session.", code="unknown_object")

    def reset(self) -> None:
        """Forget every prompt and object; the video stays open."""
        self.concept = None
        self.interactive = None
        self.next_object_id = INTERACTIVE_ID_BASE

    def object_ids(self) -> list[int]:
        ids = list(self.concept.object_ids) if self.concept else []
        return ids + (list(self.interactive.object_ids) if self.interactive else [])

    # --- propagation ---

    def propagation(self, legs: list[Leg]) -> Iterator[FrameObjects | None]:
        """Check the request now, then return the frame results as both trackers produce them
        (``None`` between compute steps: a chance for the scheduler to run other work).

        Each leg delivers its frames once, in its direction's order, with every tracker's objects.
        Concept tracking backward starts one frame later (SAM3 leaves out the frame it starts a
        backward pass on), so it covers a backward leg's first frame too, except on the last frame
        of the video, where that leg's first frame has only the tracked objects."""
        for leg in legs:
            self._check_frame(leg.first)
        concept = self.concept if self.concept is not None and self.concept.prompts else None
        interactive = self.interactive if self.interactive is not None and self.interactive.object_ids else None
        if concept is None and interactive is None:
            raise Conflict("Add a prompt before propagating.", code="nothing_to_propagate")

        def frames() -> Iterator[FrameObjects | None]:
            for leg in legs:
                sources: list[Iterator[tuple[int, Instances]]] = []
                if concept is not None:
                    sources.append(self._concept_leg(concept, leg))
                if interactive is not None:
                    sources.append(interactive.propagate(start_frame=leg.first, reverse=leg.reverse, max_frames=leg.max_frames))
                yield from _merge_by_frame(sources, leg.reverse)

        return frames()

    def _concept_leg(self, concept: ConceptVideoSession, leg: Leg) -> Iterator[tuple[int, Instances]]:
        if not leg.reverse:
            return concept.propagate(start_frame=leg.first, max_frames=leg.max_frames)
        if leg.first + 1 < self.frame_count:
            more = None if leg.max_frames is None else leg.max_frames + 1
            return concept.propagate(start_frame=leg.first + 1, reverse=True, max_frames=more)
        return concept.propagate(start_frame=leg.first, reverse=True, max_frames=leg.max_frames)

    def close(self) -> None:
        self.reset()
        self.frames.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _merge_by_frame(sources: list[Iterator[tuple[int, Instances]]], reverse: bool) -> Iterator[FrameObjects | None]:
    """Step each tracker in turn and deliver every frame once, in the direction's order.

    Each tracker yields its frames in that order, but they cover different frames and run
    at different delays (concept tracking holds frames back), so a frame is delivered once no
    tracker can still produce it: each one has produced it, moved past it, or finished."""
    pending: dict[int, list[Instances]] = {}
    reached: list[int | None] = [None] * len(sources)  # the latest frame of each tracker
    active = set(range(len(sources)))

    def settled(frame: int) -> bool:
        return all(
            index not in active or (seen is not None and (seen <= frame if reverse else seen >= frame))
            for index, seen in enumerate(reached)
        )

    while active:
        for index in sorted(active):
            try:
                frame, instances = next(sources[index])
            except StopIteration:
                active.discard(index)
            else:
                pending.setdefault(frame, []).append(instances)
                reached[index] = frame
            delivered = False
            for frame in sorted(pending, reverse=reverse):
                if not settled(frame):
                    break
                yield FrameObjects(frame, pending.pop(frame))
                delivered = True
            if not delivered:
                yield None
    for frame in sorted(pending, reverse=reverse):
        yield FrameObjects(frame, pending.pop(frame))
